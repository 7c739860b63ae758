import { useEffect, useState } from 'preact/hooks';
import { call } from './api.js';

// The graph comes from the server's tracer, the one `slipway trace` runs,
// reading the API and the registry's referrers with the user's own
// session: a hop the user may not read is a node saying "not visible to
// you", never its data.
async function traceOf(ns, target) {
  const q = new URLSearchParams({ namespace: ns, target });
  return call('GET', '/console/lineage?' + q.toString());
}

// title is a node's project, name and digest, each once, as the CLI's
// tree prints it.
function title(n) {
  let s = n.name;
  if (n.namespace && !s.startsWith(n.namespace + '/')) s = n.namespace + '/' + s;
  return s;
}

// link is where a node leads in the console, if anywhere.
function link(n) {
  if (n.notVisible || !n.namespace) return '';
  switch (n.kind) {
    case 'Image': {
      if (!n.digest) return '';
      const stream = n.name.startsWith(n.namespace + '/') ? n.name.slice(n.namespace.length + 1) : '';
      return `#/${n.namespace}/lineage/${stream ? stream + '@' : ''}${n.digest}`;
    }
    case 'Build': return `#/${n.namespace}/builds/${n.name}`;
    case 'Promotion': return `#/${n.namespace}/pipelines`;
    case 'DeploymentConfig': return `#/${n.namespace}/deployments/${n.name}`;
    default: return '';
  }
}

// rows walks the graph as the CLI's tree does: from each node nothing
// points to, each node's edges in the order the trace found them; a node
// reached again is shown once more and referred back.
function rows(g) {
  const into = new Set(g.edges.map((e) => e.to));
  const out = new Map();
  for (const e of g.edges) {
    if (!out.has(e.from)) out.set(e.from, []);
    out.get(e.from).push(e);
  }
  const byID = new Map(g.nodes.map((n) => [n.id, n]));
  const printed = new Set();
  const list = [];
  const walk = (id, label, depth) => {
    const n = byID.get(id) || { id, kind: '?', name: id };
    const again = printed.has(id) && (out.get(id) || []).length > 0;
    list.push({ n, label, depth, again });
    if (again) return;
    printed.add(id);
    for (const e of out.get(id) || []) walk(e.to, e.label, depth + 1);
  };
  for (const n of g.nodes) if (!into.has(n.id) && !printed.has(n.id)) walk(n.id, '', 0);
  return list;
}

// Lineage: where an image came from and where it runs: pods, digest,
// build, commit, base image, scan and findings, signatures, attestations
// and SBOMs (each by digest), and promotions.
export function Lineage({ ns, target }) {
  const [input, setInput] = useState(target || '');
  const [state, setState] = useState({ loading: false, error: '', answer: null });
  useEffect(() => {
    setInput(target || '');
    if (!target) { setState({ loading: false, error: '', answer: null }); return undefined; }
    let live = true;
    setState({ loading: true, error: '', answer: null });
    traceOf(ns, target).then(
      (answer) => live && setState({ loading: false, error: '', answer }),
      (e) => live && setState({ loading: false, error: e.message, answer: null }),
    );
    return () => { live = false; };
  }, [ns, target]);
  const go = (e) => { e.preventDefault(); location.hash = `#/${ns}/lineage/${input}`; };
  const a = state.answer;
  const root = a && a.graph.nodes.find((n) => n.id === a.root);
  return (
    <div id="lineage">
      <h2>Lineage</h2>
      <form onSubmit={go}>
        <input id="lineage-target" size="40" placeholder="STREAM:TAG, STREAM@DIGEST, pod/NAME or dc/NAME" value={input} onInput={(e) => setInput(e.target.value)} />
        <button type="submit">Trace</button>
      </form>
      {state.loading && <p class="muted">Tracing…</p>}
      {state.error && <p class="error" id="lineage-error">{state.error}</p>}
      {a && (
        <section class="graph" data-root={a.root} data-image={root && root.kind === 'Image' ? root.digest : undefined}>
          {rows(a.graph).map(({ n, label, depth, again }) => {
            const href = link(n);
            return (
              <div class={'node' + (n.notVisible ? ' hidden' : '')} style={{ marginLeft: `${depth * 1.5}em` }}
                data-kind={n.kind} data-id={n.id} data-digest={n.digest || undefined}>
                {label && <span class="muted">{label} → </span>}
                <strong>{n.kind}</strong>{' '}
                {href ? <a href={href}>{title(n)}</a> : title(n)}
                {n.digest && <span class="mono digest"> @{n.digest}</span>}
                {n.detail && <span class="muted"> ({n.detail})</span>}
                {again && <span class="muted"> [see above]</span>}
              </div>
            );
          })}
        </section>
      )}
    </div>
  );
}
