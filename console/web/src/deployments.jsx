import { useList, nsPath } from './api.js';
import { Loading, Phase, age } from './ui.jsx';

const annDC = 'openshift.io/deployment-config.name';
const annVersion = 'openshift.io/deployment-config.latest-version';
const annPhase = 'openshift.io/deployment.phase';

function cond(dc, type) {
  return ((dc.status && dc.status.conditions) || []).find((c) => c.type === type);
}

export function Deployments({ ns }) {
  const dcs = useList(nsPath('deploymentconfigs', ns));
  return (
    <div id="deployments">
      <h2>Deployment configs in {ns}</h2>
      <Loading list={dcs} />
      <table>
        <thead><tr><th>Name</th><th>Revision</th><th>Ready</th><th>Progress</th></tr></thead>
        <tbody>
          {dcs.items.map((d) => {
            const p = cond(d, 'Progressing');
            return (
              <tr data-dc={d.metadata.name}>
                <td><a href={`#/${ns}/deployments/${d.metadata.name}`}>{d.metadata.name}</a></td>
                <td>{d.status.latestVersion}</td>
                <td>{d.status.readyReplicas || 0}/{d.spec.replicas}</td>
                <td>{p ? p.reason : ''}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

// Deployment: a deployment config's rollout status and its revisions (its
// replication controllers), live.
export function Deployment({ ns, name }) {
  const dcs = useList(nsPath('deploymentconfigs', ns), { fieldSelector: 'metadata.name=' + name });
  const rcs = useList(nsPath('replicationcontrollers', ns));
  const dc = dcs.items[0];
  const revs = rcs.items
    .filter((rc) => (rc.metadata.annotations || {})[annDC] === name)
    .sort((a, b) => Number(b.metadata.annotations[annVersion] || 0) - Number(a.metadata.annotations[annVersion] || 0));
  let status = '';
  let state = 'unknown';
  if (dc) {
    const latest = revs.find((rc) => Number(rc.metadata.annotations[annVersion]) === dc.status.latestVersion);
    const phase = latest ? latest.metadata.annotations[annPhase] : '';
    if (!dc.status.latestVersion) { status = 'not rolled out yet'; state = 'none'; }
    else if (phase === 'Complete') { status = `revision ${dc.status.latestVersion} rolled out: ${dc.status.readyReplicas || 0} of ${dc.spec.replicas} pods ready`; state = 'complete'; }
    else if (phase === 'Failed') { status = `revision ${dc.status.latestVersion} failed: ${(latest.metadata.annotations['openshift.io/deployment.status-reason'] || '')}`; state = 'failed'; }
    else { status = `rolling out revision ${dc.status.latestVersion}: ${dc.status.updatedReplicas || 0} of ${dc.spec.replicas} updated, ${dc.status.readyReplicas || 0} ready`; state = 'progressing'; }
  }
  return (
    <div id="deployment">
      <h2><a href={`#/${ns}/deployments`}>Deployment configs</a> / {name}</h2>
      <Loading list={dcs} />
      {dcs.synced && !dc && <p class="error">Deployment config {name} does not exist.</p>}
      {dc && (
        <div>
          <p id="rollout-status" data-state={state} data-revision={dc.status.latestVersion}>{status}</p>
          {dc.spec.paused && <p class="notice">Paused.</p>}
          <p><a href={`#/${ns}/lineage/dc/${name}`}>lineage</a></p>
          <h3>Conditions</h3>
          <table>
            <tbody>
              {((dc.status && dc.status.conditions) || []).map((c) => (
                <tr><td>{c.type}</td><td>{c.status}</td><td>{c.reason}</td><td>{c.message}</td><td>{age(c.lastTransitionTime)} ago</td></tr>
              ))}
            </tbody>
          </table>
          <h3>History</h3>
          <table id="rollout-history">
            <thead><tr><th>Revision</th><th>Phase</th><th>Replicas</th><th>Cause</th><th>Created</th></tr></thead>
            <tbody>
              {revs.map((rc) => (
                <tr data-revision={rc.metadata.annotations[annVersion]}>
                  <td>{rc.metadata.annotations[annVersion]}</td>
                  <td><Phase phase={rc.metadata.annotations[annPhase]} /></td>
                  <td>{(rc.status && rc.status.readyReplicas) || 0}/{rc.spec.replicas}</td>
                  <td>{rc.metadata.annotations['openshift.io/deployment.cause'] || ''}</td>
                  <td>{age(rc.metadata.creationTimestamp)} ago</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
