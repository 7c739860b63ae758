import { useEffect, useState } from 'preact/hooks';
import { call, nsPath } from './api.js';
import { short } from './ui.jsx';

const annSource = 'org.opencontainers.image.source';
const annRevision = 'org.opencontainers.image.revision';
const annBaseName = 'org.opencontainers.image.base.name';
const annBaseDigest = 'org.opencontainers.image.base.digest';
const buildConfigLabel = 'slipway.dev/buildconfig';

// get reads one thing with the user's rights; a hop the user may not read
// is "not visible to you", as `slipway trace` says.
async function get(path) {
  try {
    return { value: await call('GET', path) };
  } catch (e) {
    if (e.code === 403 || e.code === 401) return { hidden: 'not visible to you' };
    if (e.code === 404) return { missing: true };
    return { hidden: e.message };
  }
}

// resolve turns STREAM:TAG, STREAM@DIGEST, a digest, or dc/NAME into the
// images to trace.
async function resolve(ns, target) {
  if (target.startsWith('dc/')) {
    const name = target.slice(3);
    const pods = await get(nsPath('pods', ns) + '?labelSelector=' + encodeURIComponent('deploymentconfig=' + name));
    const digests = new Set();
    for (const p of (pods.value && pods.value.items) || []) {
      for (const c of (p.status && p.status.containerStatuses) || []) {
        const m = /@(sha256:[0-9a-f]{64})/.exec(c.imageID || '') || /@(sha256:[0-9a-f]{64})/.exec(c.image || '');
        if (m) digests.add(m[1]);
      }
      for (const c of p.spec.containers || []) {
        const m = /@(sha256:[0-9a-f]{64})/.exec(c.image);
        if (m) digests.add(m[1]);
      }
    }
    return [...digests].map((d) => ({ project: ns, digest: d, via: `dc/${name}` }));
  }
  if (/^sha256:[0-9a-f]{64}$/.test(target)) return [{ project: ns, digest: target }];
  let [stream, digest] = target.split('@');
  if (digest) return [{ project: ns, stream, digest }];
  const [s, tag = 'latest'] = target.split(':');
  const is = await get(nsPath('imagestreams', ns, s));
  if (!is.value) throw new Error(`${s} is ${is.hidden || 'not found'}`);
  const t = ((is.value.status && is.value.status.tags) || []).find((x) => x.tag === tag);
  if (!t || !t.items || !t.items.length) throw new Error(`${s}:${tag} has no image`);
  return [{ project: ns, stream: s, digest: t.items[0].image, via: `${s}:${tag}` }];
}

// trace follows one image: its record, build, commit, base, scan,
// promotions and the pods that run it, each read with the user's rights.
async function trace({ project, digest }) {
  const n = { project, digest, edges: [] };
  const img = await get(nsPath('images', project, digest));
  n.hidden = img.hidden || (img.missing && 'not found');
  const ann = (img.value && img.value.manifestAnnotations) || {};
  if (ann[annRevision]) n.edges.push({ label: 'source', kind: 'Commit', name: ann[annRevision], detail: ann[annSource] });
  if (ann[annBaseDigest]) n.edges.push({ label: 'based on', kind: 'Image', name: ann[annBaseName] || '', digest: ann[annBaseDigest] });
  const builds = await get(nsPath('builds', project));
  if (builds.hidden) n.edges.push({ label: 'built by', kind: 'Build', name: '*', hidden: builds.hidden });
  for (const b of (builds.value && builds.value.items) || []) {
    if (b.status.outputDigest !== digest) continue;
    n.edges.push({ label: 'built by', kind: 'Build', name: b.metadata.name, detail: `${b.status.phase} of buildconfig ${(b.metadata.labels || {})[buildConfigLabel] || '?'}`, href: `#/${project}/builds/${b.metadata.name}` });
    if (b.status.revision) n.edges.push({ label: 'built commit', kind: 'Commit', name: b.status.revision });
  }
  const scan = await get(nsPath('imagescans', project, digest));
  if (scan.value) {
    const c = scan.value.status.counts || {};
    n.edges.push({ label: 'scanned', kind: 'Scan', name: scan.value.status.phase || '', detail: `${scan.value.status.packages || 0} packages; ` + (Object.keys(c).map((k) => `${c[k]} ${k}`).join(', ') || 'no findings') });
  } else if (scan.hidden) n.edges.push({ label: 'scanned', kind: 'Scan', name: '', hidden: scan.hidden });
  const promos = await get(nsPath('promotions', project));
  for (const p of (promos.value && promos.value.items) || []) {
    if (p.spec.image === digest || (p.status.source || '').endsWith('@' + digest)) {
      n.edges.push({ label: 'promoted by', kind: 'Promotion', name: p.metadata.name, detail: `to ${p.spec.to}: ${p.status.phase || 'Pending'}`, href: `#/${project}/pipelines` });
    }
  }
  const pods = await get(nsPath('pods', project));
  for (const p of (pods.value && pods.value.items) || []) {
    const runs = (p.status.containerStatuses || []).some((c) => (c.imageID || '').includes(digest)) || (p.spec.containers || []).some((c) => c.image.includes(digest));
    if (runs) n.edges.push({ label: 'run by', kind: 'Pod', name: p.metadata.name, detail: `${p.status.phase || 'Pending'} on ${p.spec.nodeName || 'no node'}` });
  }
  return n;
}

// Lineage: where an image came from and where it went, read with the
// user's own rights (the console's take on `slipway trace`).
export function Lineage({ ns, target }) {
  const [input, setInput] = useState(target || '');
  const [state, setState] = useState({ loading: false, error: '', nodes: [] });
  useEffect(() => {
    setInput(target || '');
    if (!target) { setState({ loading: false, error: '', nodes: [] }); return undefined; }
    let live = true;
    setState({ loading: true, error: '', nodes: [] });
    (async () => {
      try {
        const roots = await resolve(ns, decodeURIComponent(target));
        const nodes = [];
        for (const r of roots) nodes.push({ ...r, ...(await trace(r)) });
        if (live) setState({ loading: false, error: roots.length ? '' : 'nothing runs an image by digest here', nodes });
      } catch (e) {
        if (live) setState({ loading: false, error: e.message, nodes: [] });
      }
    })();
    return () => { live = false; };
  }, [ns, target]);
  const go = (e) => { e.preventDefault(); location.hash = `#/${ns}/lineage/${input}`; };
  return (
    <div id="lineage">
      <h2>Lineage</h2>
      <form onSubmit={go}>
        <input id="lineage-target" size="40" placeholder="STREAM:TAG, STREAM@DIGEST or dc/NAME" value={input} onInput={(e) => setInput(e.target.value)} />
        <button type="submit">Trace</button>
      </form>
      {state.loading && <p class="muted">Tracing…</p>}
      {state.error && <p class="error">{state.error}</p>}
      {state.nodes.map((n) => (
        <section class="graph" data-image={n.digest}>
          <div class={'node' + (n.hidden ? ' hidden' : '')}>
            <strong>Image</strong> {n.project}/{n.stream || ''}@<span class="mono">{n.digest}</span>
            {n.via && <span class="muted"> ← {n.via}</span>}
            {n.hidden && <span class="muted"> ({n.hidden})</span>}
          </div>
          {n.edges.map((e) => (
            <div class={'node edge' + (e.hidden ? ' hidden' : '')} data-kind={e.kind}>
              <span class="muted">{e.label} →</span> <strong>{e.kind}</strong>{' '}
              {e.href ? <a href={e.href}>{e.name}</a> : e.name}
              {e.digest && <span class="mono"> @{short(e.digest)} <a href={`#/${ns}/lineage/${e.digest}`}>trace</a></span>}
              {e.detail && <span class="muted"> {e.detail}</span>}
              {e.hidden && <span class="muted"> {e.hidden}</span>}
            </div>
          ))}
        </section>
      ))}
    </div>
  );
}
