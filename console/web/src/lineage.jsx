export function Lineage({ ns, target }) {
  return <div id="lineage"><h2>Lineage</h2><p class="muted">Use <code>slipway trace {target || 'IMAGE'}</code> in project {ns}.</p></div>;
}
