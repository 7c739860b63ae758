import { useEffect } from 'preact/hooks';
import { useList, nsPath } from './api.js';
import { Loading, Phase, matches } from './ui.jsx';

const shown = 25;

function podCounts(pods) {
  const c = {};
  for (const p of pods) {
    const ph = (p.status && p.status.phase) || 'Pending';
    c[ph] = (c[ph] || 0) + 1;
  }
  return c;
}

function Group({ title, id, pods, extra }) {
  const counts = podCounts(pods);
  return (
    <section class="group" data-service={id}>
      <h3>{title} {extra}</h3>
      <p class="counts">
        <span data-test="pod-count">{pods.length} pods</span>
        {Object.keys(counts).sort().map((ph) => <span class="count"><Phase phase={ph} /> {counts[ph]}</span>)}
      </p>
      {pods.length > 0 && (
        <table>
          <tbody>
            {pods.slice(0, shown).map((p) => (
              <tr data-pod={p.metadata.name}>
                <td>{p.metadata.name}</td>
                <td><Phase phase={p.status && p.status.phase} /></td>
                <td class="muted">{p.spec.nodeName || 'not scheduled'}</td>
                <td class="muted mono">{(p.spec.containers || []).map((c) => c.image).join(', ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {pods.length > shown && <p class="muted">and {pods.length - shown} more</p>}
    </section>
  );
}

// Overview: the project's applications, grouped by the service that
// selects their pods, with each pod's status.
export function Overview({ ns }) {
  const services = useList(nsPath('services', ns));
  const pods = useList(nsPath('pods', ns));
  const dcs = useList(nsPath('deploymentconfigs', ns));
  const claimed = new Set();
  const groups = services.items.map((s) => {
    const mine = pods.items.filter((p) => matches(s.spec.selector, p.metadata.labels));
    mine.forEach((p) => claimed.add(p.metadata.name));
    const ports = (s.spec.ports || []).map((p) => p.port).join(',');
    return <Group id={s.metadata.name} title={'service/' + s.metadata.name} pods={mine} extra={<span class="muted">{s.spec.clusterIP} {ports && ':' + ports}</span>} />;
  });
  const rest = pods.items.filter((p) => !claimed.has(p.metadata.name));
  const synced = pods.synced && services.synced && dcs.synced;
  // Marks when the whole project is on the page (the load test reads it).
  useEffect(() => { if (synced) performance.mark('slipway:overview-loaded'); }, [synced]);
  return (
    <div id="overview">
      <h2>Project {ns}</h2>
      <Loading list={pods} />
      <p class="summary" id="overview-summary" data-synced={String(pods.synced && services.synced)}>
        {services.items.length} services, {dcs.items.length} deployment configs, {pods.items.length} pods
      </p>
      {dcs.items.length > 0 && (
        <table id="overview-dcs">
          <thead><tr><th>Deployment config</th><th>Revision</th><th>Ready</th></tr></thead>
          <tbody>
            {dcs.items.map((d) => (
              <tr><td><a href={`#/${ns}/deployments/${d.metadata.name}`}>{d.metadata.name}</a></td><td>{d.status.latestVersion}</td><td>{d.status.readyReplicas || 0}/{d.spec.replicas}</td></tr>
            ))}
          </tbody>
        </table>
      )}
      {groups}
      {rest.length > 0 && <Group id="" title="Pods no service selects" pods={rest} />}
    </div>
  );
}
