import { useState } from 'preact/hooks';
import { useList, nsPath, call, useCan } from './api.js';
import { Loading, Phase, age, short } from './ui.jsx';

// Stage shows the digest a stage's tag holds now, read from the stage's
// own project with the user's rights.
function Stage({ pl, stage }) {
  const list = useList(nsPath('imagestreams', stage.project), { fieldSelector: 'metadata.name=' + pl.spec.stream });
  const is = list.items[0];
  const t = is && ((is.status && is.status.tags) || []).find((x) => x.tag === stage.tag);
  const ev = t && t.items && t.items[0];
  let digest = <span class="muted">empty</span>;
  if (list.error) digest = <span class="muted">not visible to you</span>;
  else if (ev) digest = <span class="mono" title={ev.image}>{short(ev.image)}</span>;
  return (
    <li class="stage" data-stage={stage.name} data-digest={ev ? ev.image : ''}>
      <strong>{stage.name}</strong> <span class="muted">{stage.project}/{pl.spec.stream}:{stage.tag}</span><br />
      {digest}
      <br />
      <span class="muted">
        {stage.requireApproval ? 'approval required' : ''}
        {stage.minSoak && stage.minSoak !== '0s' ? ` · soak ${stage.minSoak}` : ''}
      </span>
    </li>
  );
}

function ApproveButton({ p, target, onDone }) {
  const allowed = useCan('promote', 'promotions', target);
  const [busy, setBusy] = useState(false);
  if (allowed === null) return null;
  if (!allowed) return <span class="approve-denied muted" title={`approving needs the promote permission in ${target}`}>needs approval in {target}</span>;
  const approve = async () => {
    setBusy(true);
    try {
      await call('POST', nsPath('promotions', p.metadata.namespace, p.metadata.name, 'approve'), {});
      onDone('');
    } catch (e) {
      onDone(e.message);
    }
    setBusy(false);
  };
  return <button class="approve" data-promotion={p.metadata.name} disabled={busy} onClick={approve}>Approve</button>;
}

function Promotion({ p, pl }) {
  const [err, setErr] = useState('');
  const stage = pl && pl.spec.stages.find((s) => s.name === p.spec.to);
  const target = stage ? stage.project : '';
  const st = p.status || {};
  const pending = !st.phase || st.phase === 'Pending';
  return (
    <tr data-promotion={p.metadata.name} data-phase={st.phase || 'Pending'}>
      <td>{p.metadata.name}</td>
      <td>{p.spec.pipeline} → {p.spec.to}</td>
      <td class="mono">{short(p.spec.image || (st.source || '').split('@')[1])}</td>
      <td><Phase phase={st.phase || 'Pending'} /> {st.message}</td>
      <td>{(st.checks || []).map((c) => <div class={c.passed ? 'ok' : 'error'}>{c.passed ? '✓' : '✗'} {c.rule}: {c.message}</div>)}</td>
      <td class="approvals">{(st.approvals || []).map((a) => <div>{a.user} ({age(a.at)} ago)</div>)}</td>
      <td>{pending && target && <ApproveButton p={p} target={target} onDone={setErr} />}{err && <div class="error">{err}</div>}</td>
    </tr>
  );
}

// Pipelines: each pipeline's stages with the digest each holds, and the
// promotions through them, with their gates and approvals.
export function Pipelines({ ns }) {
  const pipelines = useList(nsPath('pipelines', ns));
  const promotions = useList(nsPath('promotions', ns));
  const byName = Object.fromEntries(pipelines.items.map((p) => [p.metadata.name, p]));
  const promos = [...promotions.items].sort((a, b) => (b.metadata.creationTimestamp || '').localeCompare(a.metadata.creationTimestamp || ''));
  return (
    <div id="pipelines">
      <h2>Pipelines in {ns}</h2>
      <Loading list={pipelines} />
      {pipelines.items.map((pl) => (
        <section class="pipeline" data-pipeline={pl.metadata.name}>
          <h3>{pl.metadata.name} <span class="muted">stream {pl.spec.stream}</span></h3>
          <ol class="stages">{pl.spec.stages.map((s) => <Stage pl={pl} stage={s} />)}</ol>
        </section>
      ))}
      <h3>Promotions</h3>
      <Loading list={promotions} />
      <table id="promotions">
        <thead><tr><th>Promotion</th><th>To</th><th>Image</th><th>Phase</th><th>Gates</th><th>Approvals</th><th></th></tr></thead>
        <tbody>{promos.map((p) => <Promotion p={p} pl={byName[p.spec.pipeline]} />)}</tbody>
      </table>
    </div>
  );
}
