import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { call, setCSRF, forgetRights, useList, projectsPath } from './api.js';
import { Overview } from './overview.jsx';
import { Images, ImageStream } from './images.jsx';
import { Builds, Build } from './builds.jsx';
import { Deployments, Deployment } from './deployments.jsx';
import { Pipelines } from './pipelines.jsx';
import { Vulnerabilities } from './vulnerabilities.jsx';
import { Lineage } from './lineage.jsx';
import './style.css';

// Routes are in the hash: #/PROJECT/PAGE[/NAME], or #/vulnerabilities.
function useRoute() {
  const parse = () => decodeURIComponent(location.hash.replace(/^#\/?/, '')).split('/').filter(Boolean);
  const [route, setRoute] = useState(parse());
  useEffect(() => {
    const on = () => setRoute(parse());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

function Login({ onLogin }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const submit = async (e) => {
    e.preventDefault();
    setError('');
    try {
      const s = await call('POST', '/console/login', { user, password });
      onLogin(s);
    } catch (err) {
      setError(err.message);
    }
  };
  return (
    <form class="login" id="login" onSubmit={submit}>
      <h1>Slipway</h1>
      <label>User <input id="login-user" autocomplete="username" value={user} onInput={(e) => setUser(e.target.value)} /></label>
      <label>Password <input id="login-password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword(e.target.value)} /></label>
      <button id="login-submit" type="submit">Log in</button>
      {error && <p class="error" id="login-error">{error}</p>}
    </form>
  );
}

const pages = [
  ['overview', 'Overview'],
  ['images', 'Images'],
  ['builds', 'Builds'],
  ['deployments', 'Deployments'],
  ['pipelines', 'Pipelines'],
  ['lineage', 'Lineage'],
];

function Shell({ session, onLogout, route }) {
  const projects = useList(projectsPath);
  const names = projects.items.map((p) => p.metadata.name);
  const global = route[0] === 'vulnerabilities';
  const ns = global ? '' : route[0] || '';
  const page = route[1] || 'overview';
  useEffect(() => {
    // The hash, not this render's route: the user (or a test) may have
    // chosen a page since this render.
    if (!location.hash.replace(/^#\/?/, '') && names.length) location.hash = `#/${names[0]}/overview`;
  }, [ns, names.join(','), global]);
  const logout = async () => {
    try { await call('POST', '/console/logout'); } catch { /* the cookie is gone either way */ }
    onLogout();
  };
  let body = <p class="muted">Choose a project.</p>;
  if (global) body = <Vulnerabilities projects={names} />;
  else if (ns && !names.includes(ns) && projects.synced) body = <p class="error" id="no-project">Project {ns} does not exist or is not visible to you.</p>;
  else if (ns) {
    const name = route.slice(2).join('/');
    switch (page) {
      case 'overview': body = <Overview ns={ns} />; break;
      case 'images': body = name ? <ImageStream ns={ns} name={name} /> : <Images ns={ns} />; break;
      case 'builds': body = name ? <Build ns={ns} name={name} /> : <Builds ns={ns} />; break;
      case 'deployments': body = name ? <Deployment ns={ns} name={name} /> : <Deployments ns={ns} />; break;
      case 'pipelines': body = <Pipelines ns={ns} />; break;
      case 'lineage': body = <Lineage ns={ns} target={name} />; break;
      default: body = <p class="error">No page {page}.</p>;
    }
  }
  return (
    <div class="shell">
      <header>
        <strong>Slipway</strong>
        <select id="project" value={ns} onChange={(e) => { location.hash = `#/${e.target.value}/${global ? 'overview' : page}`; }}>
          <option value="" disabled>project…</option>
          {names.map((n) => <option value={n}>{n}</option>)}
        </select>
        <nav>
          {pages.map(([p, label]) => <a id={'nav-' + p} class={!global && p === page ? 'active' : ''} href={ns ? `#/${ns}/${p}` : '#/'}>{label}</a>)}
          <a id="nav-vulnerabilities" class={global ? 'active' : ''} href="#/vulnerabilities">Vulnerabilities</a>
        </nav>
        <span class="user" id="user">{session.user}</span>
        <button id="logout" onClick={logout}>Log out</button>
      </header>
      {projects.error && <p class="error">{projects.error}</p>}
      <main id="page" data-page={global ? 'vulnerabilities' : page}>{body}</main>
    </div>
  );
}

function App() {
  const [session, setSession] = useState(undefined);
  const route = useRoute();
  useEffect(() => {
    call('GET', '/console/session').then((s) => { setCSRF(s.csrfToken); setSession(s); }, () => setSession(null));
    const out = () => { forgetRights(); setSession(null); };
    window.addEventListener('slipway-unauthorized', out);
    return () => window.removeEventListener('slipway-unauthorized', out);
  }, []);
  if (session === undefined) return <p class="muted">Loading…</p>;
  if (!session) return <Login onLogin={(s) => { setCSRF(s.csrfToken); forgetRights(); setSession(s); }} />;
  return <Shell session={session} route={route} onLogout={() => { forgetRights(); setSession(null); }} />;
}

render(<App />, document.getElementById('app'));
