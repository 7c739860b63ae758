import { useList, nsPath } from './api.js';
import { Loading, short } from './ui.jsx';

const sevRank = { CRITICAL: 4, HIGH: 3, MEDIUM: 2, LOW: 1, UNKNOWN: 0 };
// Each project's section holds three watches; a user has a bounded number
// of watches at the API, so the page follows this many projects at once.
const maxProjects = 15;

function ProjectVulns({ ns }) {
  const scans = useList(nsPath('imagescans', ns));
  const pods = useList(nsPath('pods', ns));
  const streams = useList(nsPath('imagestreams', ns));
  const tagsOf = {};
  for (const is of streams.items) {
    for (const t of (is.status && is.status.tags) || []) {
      const d = t.items && t.items[0] && t.items[0].image;
      if (d) (tagsOf[d] = tagsOf[d] || []).push(`${is.metadata.name}:${t.tag}`);
    }
  }
  const podsOf = (digest) => pods.items.filter((p) => p.status && p.status.phase === 'Running' &&
    ((p.status.containerStatuses || []).some((c) => (c.imageID || '').includes(digest)) || (p.spec.containers || []).some((c) => c.image.includes(digest))));
  const findings = new Map();
  for (const sc of scans.items) {
    const digest = sc.metadata.name;
    for (const f of (sc.status && sc.status.findings) || []) {
      if (f.ignored) continue;
      const k = f.id + ' ' + f.package;
      if (!findings.has(k)) findings.set(k, { ...f, digests: [] });
      findings.get(k).digests.push(digest);
    }
  }
  const rows = [...findings.values()].sort((a, b) => (sevRank[b.severity] || 0) - (sevRank[a.severity] || 0) || a.id.localeCompare(b.id));
  return (
    <section class="vulns" data-project={ns}>
      <h3>{ns} <span class="muted">{scans.items.length} scanned images, {rows.length} findings</span></h3>
      <Loading list={scans} />
      {rows.length > 0 && (
        <table>
          <thead><tr><th>Finding</th><th>Severity</th><th>Package</th><th>Fixed in</th><th>Images</th><th>Running pods</th></tr></thead>
          <tbody>
            {rows.map((f) => {
              const affected = f.digests.flatMap(podsOf);
              return (
                <tr data-finding={f.id}>
                  <td title={f.summary}>{f.id}</td>
                  <td class={'sev-' + (f.severity || 'UNKNOWN').toLowerCase()}>{f.severity}</td>
                  <td>{f.package} {f.version}</td>
                  <td>{f.fixedIn || '—'}</td>
                  <td>{f.digests.map((d) => <div class="mono"><a href={`#/${ns}/lineage/${encodeURIComponent(d)}`}>{(tagsOf[d] || []).join(', ') || short(d)}</a></div>)}</td>
                  <td>{affected.length ? affected.map((p) => <div>{p.metadata.name}</div>) : <span class="muted">none</span>}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

// Vulnerabilities: findings of every scanned image in the projects the
// user may see, with the tags that hold each image and the running pods
// that run it.
export function Vulnerabilities({ projects }) {
  const shown = projects.slice(0, maxProjects);
  return (
    <div id="vulnerabilities">
      <h2>Vulnerabilities</h2>
      {projects.length > maxProjects && <p class="notice">Showing the first {maxProjects} of {projects.length} projects.</p>}
      {shown.map((ns) => <ProjectVulns ns={ns} />)}
    </div>
  );
}
