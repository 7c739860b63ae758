import { useEffect, useState } from 'preact/hooks';
import { useList, nsPath, call, useCan } from './api.js';
import { Loading, short, age } from './ui.jsx';

// Images: the project's image streams and their tags.
export function Images({ ns }) {
  const streams = useList(nsPath('imagestreams', ns));
  useEffect(() => { if (streams.synced) performance.mark('slipway:images-loaded'); }, [streams.synced]);
  return (
    <div id="images">
      <h2>Image streams in {ns}</h2>
      <Loading list={streams} />
      <p class="summary" id="images-summary" data-synced={String(streams.synced)}>{streams.items.length} image streams</p>
      <table>
        <thead><tr><th>Stream</th><th>Tags</th><th>Updated</th></tr></thead>
        <tbody>
          {streams.items.map((s) => {
            const tags = (s.status && s.status.tags) || [];
            const latest = tags.map((t) => t.items && t.items[0] && t.items[0].created).filter(Boolean).sort().pop();
            return (
              <tr data-stream={s.metadata.name}>
                <td><a href={`#/${ns}/images/${s.metadata.name}`}>{s.metadata.name}</a></td>
                <td>{tags.map((t) => t.tag).join(', ')}</td>
                <td>{age(latest)}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

// ImageStream: each tag's history, newest first, with rollback to an
// earlier entry for users who may write the stream's status.
export function ImageStream({ ns, name }) {
  const list = useList(nsPath('imagestreams', ns), { fieldSelector: 'metadata.name=' + name });
  const canRollback = useCan('update', 'imagestreams', ns, 'status');
  const [msg, setMsg] = useState('');
  const is = list.items[0];
  const rollback = async (tag, idx) => {
    setMsg('');
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await call('GET', nsPath('imagestreams', ns, name));
      const t = cur.status.tags.find((x) => x.tag === tag);
      const ev = { ...t.items[idx], created: new Date().toISOString(), by: undefined };
      t.items = [ev, ...t.items];
      try {
        await call('PUT', nsPath('imagestreams', ns, name, 'status'), cur);
        setMsg(`Rolled ${name}:${tag} back to ${short(ev.image)}.`);
        return;
      } catch (e) {
        if (e.code !== 409) { setMsg(e.message); return; }
      }
    }
    setMsg(`${name}:${tag} kept changing; try again.`);
  };
  return (
    <div id="imagestream">
      <h2><a href={`#/${ns}/images`}>Image streams</a> / {name}</h2>
      <Loading list={list} />
      {list.synced && !is && <p class="error">Image stream {name} does not exist.</p>}
      {msg && <p class="notice" id="rollback-message">{msg}</p>}
      {is && <p class="muted mono">{is.status.dockerImageRepository}</p>}
      {is && ((is.status && is.status.tags) || []).map((t) => (
        <section class="tag" data-tag={t.tag}>
          <h3>{name}:{t.tag} <a class="small" href={`#/${ns}/lineage/${name}:${t.tag}`}>lineage</a></h3>
          <table class="history" data-test="tag-history">
            <thead><tr><th>#</th><th>Image</th><th>Created</th><th>By</th><th></th></tr></thead>
            <tbody>
              {(t.items || []).map((ev, i) => (
                <tr data-generation={ev.generation} data-image={ev.image}>
                  <td>{i}</td>
                  <td class="mono" title={ev.dockerImageReference}>{ev.image}</td>
                  <td>{age(ev.created)} ago</td>
                  <td>{ev.by || ''}</td>
                  <td>{i > 0 && canRollback && ev.image !== t.items[0].image && <button class="rollback" onClick={() => rollback(t.tag, i)}>Roll back to this</button>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ))}
    </div>
  );
}
