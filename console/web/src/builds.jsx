import { useRef } from 'preact/hooks';
import { useList, nsPath } from './api.js';
import { Loading, Phase, age, short } from './ui.jsx';

export function Builds({ ns }) {
  const builds = useList(nsPath('builds', ns));
  const sorted = [...builds.items].sort((a, b) => (b.metadata.creationTimestamp || '').localeCompare(a.metadata.creationTimestamp || ''));
  return (
    <div id="builds">
      <h2>Builds in {ns}</h2>
      <Loading list={builds} />
      <table>
        <thead><tr><th>Build</th><th>Phase</th><th>Started</th><th>Output</th></tr></thead>
        <tbody>
          {sorted.map((b) => (
            <tr data-build={b.metadata.name}>
              <td><a href={`#/${ns}/builds/${b.metadata.name}`}>{b.metadata.name}</a></td>
              <td><Phase phase={b.status.phase} /></td>
              <td>{age(b.status.startTimestamp || b.metadata.creationTimestamp)} ago</td>
              <td class="mono">{short(b.status.outputDigest)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

// grow appends what the log's tail gained since the last one: the tail is
// a window of the log's end, so find where the old tail ends in the new.
function grow(log, oldTail, tail) {
  if (tail === oldTail) return log;
  if (tail.startsWith(oldTail)) return log + tail.slice(oldTail.length);
  for (let i = 0; i < oldTail.length; i++) {
    if (tail.startsWith(oldTail.slice(i))) return log + tail.slice(oldTail.length - i);
  }
  return log + tail;
}

// Build: one build's phase and its log, growing as the build writes it
// (the build's watch carries the log's tail).
export function Build({ ns, name }) {
  const list = useList(nsPath('builds', ns), { fieldSelector: 'metadata.name=' + name });
  const acc = useRef({ name: '', log: '', tail: '' });
  const b = list.items[0];
  if (acc.current.name !== name) acc.current = { name, log: '', tail: '' };
  if (b) {
    const tail = b.status.logTail || '';
    acc.current.log = grow(acc.current.log, acc.current.tail, tail);
    acc.current.tail = tail;
  }
  return (
    <div id="build">
      <h2><a href={`#/${ns}/builds`}>Builds</a> / {name}</h2>
      <Loading list={list} />
      {list.synced && !b && <p class="error">Build {name} does not exist.</p>}
      {b && (
        <div>
          <p id="build-phase" data-phase={b.status.phase}><Phase phase={b.status.phase} /> {b.status.reason} {b.status.message}</p>
          {b.status.outputDockerImageReference && <p class="mono">{b.status.outputDockerImageReference}</p>}
          <pre id="build-log" class="log">{acc.current.log}</pre>
        </div>
      )}
    </div>
  );
}
