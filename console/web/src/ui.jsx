// Small pieces the pages share.
export function short(digest) {
  if (!digest) return '';
  const i = digest.indexOf(':');
  return i >= 0 ? digest.slice(0, i + 13) : digest.slice(0, 12);
}

export function age(ts) {
  if (!ts) return '';
  const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.round(s / 60) + 'm';
  if (s < 86400) return Math.round(s / 3600) + 'h';
  return Math.round(s / 86400) + 'd';
}

export function Phase({ phase }) {
  const p = phase || 'Unknown';
  return <span class={'phase phase-' + p.toLowerCase()}>{p}</span>;
}

export function Loading({ list }) {
  if (list.error) return <p class="error">{list.error}</p>;
  if (!list.synced) return <p class="muted">Loading…</p>;
  return null;
}

export function matches(selector, labels) {
  const sel = selector || {};
  const keys = Object.keys(sel);
  if (!keys.length) return false;
  return keys.every((k) => (labels || {})[k] === sel[k]);
}
