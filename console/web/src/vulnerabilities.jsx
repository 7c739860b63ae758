import { useList, API } from './api.js';
import { Loading, short } from './ui.jsx';

const sevRank = { CRITICAL: 4, HIGH: 3, MEDIUM: 2, LOW: 1, UNKNOWN: 0 };

// byProject groups a list's items by project, keeping only the projects
// in shown: the API sends nothing of a project the user may not read,
// and an object of a project the user has lost since stays out too.
function byProject(items, shown) {
  const out = new Map();
  for (const o of items) {
    const ns = o.metadata.namespace;
    if (!shown.has(ns)) continue;
    if (!out.has(ns)) out.set(ns, []);
    out.get(ns).push(o);
  }
  return out;
}

function ProjectVulns({ ns, scans, pods, streams, list }) {
  const tagsOf = {};
  for (const is of streams) {
    for (const t of (is.status && is.status.tags) || []) {
      const d = t.items && t.items[0] && t.items[0].image;
      if (d) (tagsOf[d] = tagsOf[d] || []).push(`${is.metadata.name}:${t.tag}`);
    }
  }
  const podsOf = (digest) => pods.filter((p) => p.status && p.status.phase === 'Running' &&
    ((p.status.containerStatuses || []).some((c) => (c.imageID || '').includes(digest)) || (p.spec.containers || []).some((c) => c.image.includes(digest))));
  const findings = new Map();
  for (const sc of scans) {
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
    <section class="vulns" data-project={ns} data-synced={list.synced ? 'true' : 'false'}>
      <h3>{ns} <span class="muted">{scans.length} scanned images, {rows.length} findings</span></h3>
      <Loading list={list} />
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
                  <td>{f.digests.map((d) => <div class="mono"><a href={`#/${ns}/lineage/${(tagsOf[d] || [])[0] ? tagsOf[d][0].split(':')[0] + '@' : ''}${d}`}>{(tagsOf[d] || []).join(', ') || short(d)}</a></div>)}</td>
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
// that run it. Three watches, whatever the number of projects: each
// follows one resource across every project (the API authorizes each
// object and event in its own project), not one per project and
// resource, which the API's cap on a user's watches would end at ~20
// projects.
export function Vulnerabilities({ projects }) {
  const scans = useList(`${API}/imagescans`);
  const pods = useList(`${API}/pods`);
  const streams = useList(`${API}/imagestreams`);
  const shown = new Set(projects);
  const scansOf = byProject(scans.items, shown);
  const podsOf = byProject(pods.items, shown);
  const streamsOf = byProject(streams.items, shown);
  const list = scans.error || pods.error || streams.error
    ? { error: scans.error || pods.error || streams.error }
    : { synced: scans.synced && pods.synced && streams.synced };
  return (
    <div id="vulnerabilities">
      <h2>Vulnerabilities</h2>
      {projects.map((ns) => <ProjectVulns ns={ns} list={list} scans={scansOf.get(ns) || []} pods={podsOf.get(ns) || []} streams={streamsOf.get(ns) || []} />)}
    </div>
  );
}
