// The console's only way to the platform: the API itself, through the
// console's proxy at /console/api, as the logged-in user. The server keeps
// the session in an HttpOnly cookie; writes carry the CSRF token.
import { useEffect, useState } from 'preact/hooks';

export const API = '/console/api/apis/slipway.dev/v1';

let csrf = '';
export function setCSRF(t) { csrf = t; }

export class APIError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

function unauthorized() { window.dispatchEvent(new Event('slipway-unauthorized')); }

// call makes one request and returns the decoded JSON answer, or throws an
// APIError with the API's own message.
export async function call(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const opts = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = text;
  try { data = JSON.parse(text); } catch { /* plain text, such as a log */ }
  if (!r.ok) {
    if (r.status === 401) unauthorized();
    throw new APIError(r.status, (data && data.message) || text || r.statusText);
  }
  return data;
}

export function nsPath(resource, ns, name, sub) {
  let p = `${API}/namespaces/${encodeURIComponent(ns)}/${resource}`;
  if (name) p += '/' + encodeURIComponent(name);
  if (sub) p += '/' + sub;
  return p;
}

export const projectsPath = `${API}/projects`;

export function key(o) { return (o.metadata.namespace || '') + '/' + o.metadata.name; }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// useList keeps a live copy of a collection: it lists it (in pages) and
// then follows the API's watch from the list's resourceVersion, resuming
// where it left off when the stream ends and listing again after a 410.
// It never polls. query is extra query parameters (labelSelector,
// fieldSelector). A null path lists nothing.
export function useList(path, query) {
  const [state, setState] = useState({ items: [], synced: false, error: null });
  const q = query ? new URLSearchParams(query).toString() : '';
  useEffect(() => {
    setState({ items: [], synced: false, error: null });
    if (!path) return undefined;
    const ctl = new AbortController();
    let stopped = false;
    const items = new Map();
    const publish = (synced) => {
      const arr = [...items.values()];
      arr.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
      setState({ items: arr, synced, error: null });
    };
    const fail = (e) => setState((s) => ({ ...s, error: e.message }));
    const url = (extra) => path + '?' + [q, extra].filter(Boolean).join('&');
    async function list() {
      items.clear();
      let cont = '';
      let rv = '';
      do {
        const r = await fetch(url('limit=500' + (cont ? '&continue=' + encodeURIComponent(cont) : '')), { signal: ctl.signal, credentials: 'same-origin' });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) {
          if (r.status === 401) unauthorized();
          throw new APIError(r.status, data.message || r.statusText);
        }
        for (const o of data.items || []) items.set(key(o), o);
        cont = (data.metadata && data.metadata.continue) || '';
        rv = (data.metadata && data.metadata.resourceVersion) || rv;
      } while (cont);
      publish(true);
      return rv;
    }
    async function follow(rv) {
      const r = await fetch(url('watch=true&resourceVersion=' + rv), { signal: ctl.signal, credentials: 'same-origin' });
      if (!r.ok) {
        const data = await r.json().catch(() => ({}));
        if (r.status === 401) unauthorized();
        throw new APIError(r.status, data.message || r.statusText);
      }
      setState((s) => (s.error ? { ...s, error: null } : s));
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return rv;
        buf += dec.decode(value, { stream: true });
        let changed = false;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line);
          if (ev.type === 'ERROR') throw new APIError((ev.object && ev.object.code) || 500, (ev.object && ev.object.message) || 'watch failed');
          const o = ev.object;
          rv = o.metadata.resourceVersion || rv;
          if (ev.type === 'DELETED') items.delete(key(o));
          else items.set(key(o), o);
          changed = true;
        }
        if (changed) publish(true);
      }
    }
    (async () => {
      let rv = '';
      let backoff = 500;
      while (!stopped) {
        try {
          if (!rv) rv = await list();
          rv = await follow(rv);
          backoff = 500;
        } catch (e) {
          if (stopped) return;
          if (e.code === 410) { rv = ''; continue; }
          if (e.code === 401 || e.code === 403 || e.code === 404) { fail(e); return; }
          // A browser ends its HTTP/2 streams when the machine's network
          // changes (ERR_NETWORK_CHANGED); the list resumes where it was.
          console.warn(`watch of ${path}${q ? '?' + q : ''} broke (${e.message}); resuming from resourceVersion ${rv || '(a new list)'}`);
          fail(new Error(`reconnecting (${e.message})`));
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 10000);
        }
      }
    })();
    return () => { stopped = true; ctl.abort(); };
  }, [path, q]);
  return state;
}

// useCan says whether the user may do one thing (null until known), so a
// page shows only the actions the user has. The API decides regardless.
const canCache = new Map();
export function useCan(verb, resource, namespace, subresource) {
  const k = `verb=${encodeURIComponent(verb)}&resource=${encodeURIComponent(resource)}&namespace=${encodeURIComponent(namespace || '')}&subresource=${encodeURIComponent(subresource || '')}`;
  const [allowed, setAllowed] = useState(canCache.has(k) ? canCache.get(k) : null);
  useEffect(() => {
    if (canCache.has(k)) { setAllowed(canCache.get(k)); return; }
    let live = true;
    call('GET', '/console/can?' + k).then((r) => { canCache.set(k, r.allowed); if (live) setAllowed(r.allowed); }, () => live && setAllowed(false));
    return () => { live = false; };
  }, [k]);
  return allowed;
}
export function forgetRights() { canCache.clear(); }
