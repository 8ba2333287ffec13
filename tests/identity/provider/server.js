// A real OpenID Provider for kbai's tests: the certified `oidc-provider` package with its own login page.
//
// Started by tests/identity/provider.py (never by hand in CI): `node server.js CONFIG.json`. The config
// fixes the issuer, the port and the signing keys (the first key signs; a key rotation is a restart with
// another list). Everything a test changes between sign-ins lives in the state file named by the config,
// read again on every use: the registered clients, the accounts with their passwords and claims, and
// three knobs for failure tests (JWKS keys hidden from /jwks, the ID token lifetime, and an ID token
// issued for another registered client). Nothing here imitates OIDC: discovery, the authorization and
// token endpoints, PKCE, the ID token and its signature are oidc-provider's own.
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const state = () => JSON.parse(readFileSync(config.state_file, 'utf8'));
const stats = { jwks: 0, token: 0, discovery: 0 };

// A memory store for everything the provider keeps, except clients: those come from the state file.
const stores = new Map();
const byUid = new Map();
class Adapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(id, { payload: { ...payload }, expiresAt });
    if (payload.uid) byUid.set(payload.uid, { name: this.name, id });
  }

  async find(id) {
    if (this.name === 'Client') {
      const client = state().clients.find((c) => c.client_id === id);
      return client ? { ...client } : undefined;
    }
    const found = this.store.get(id);
    if (!found || found.expiresAt <= Date.now()) return undefined;
    return found.payload;
  }

  async findByUid(uid) {
    const found = byUid.get(uid);
    return found && found.name === this.name ? this.find(found.id) : undefined;
  }

  async findByUserCode() { return undefined; }

  async consume(id) {
    const found = this.store.get(id);
    if (found) found.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const store of stores.values()) {
      for (const [id, value] of store) {
        if (value?.payload?.grantId === grantId) store.delete(id);
      }
    }
  }
}

const provider = new Provider(config.issuer, {
  adapter: Adapter,
  jwks: { keys: config.keys },
  cookies: { keys: [config.cookie_key] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    org: ['org_id', 'org_name', 'roles'],
  },
  scopes: ['openid', 'email', 'profile', 'org'],
  // Claims of the granted scopes go into the ID token itself (as Auth0, Keycloak and Entra ID do with
  // their mapped claims), not only into the userinfo response.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { IdToken: () => state().id_token_ttl ?? 3600 },
  // Accounts are found by their subject (the login name is only what the person types).
  async findAccount(ctx, id) {
    const account = Object.entries(state().accounts).find(([login, a]) => (a.sub ?? login) === id)?.[1];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() { return { sub: id, ...account.claims }; },
    };
  },
  // First-party client: no consent screen, every requested scope is granted (as a product's own login does).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.params.scope ?? 'openid');
    await grant.save();
    return grant;
  },
});

// Failure knob: issue the ID token for another registered client (token substitution, wrong `aud`).
const issue = provider.IdToken.prototype.issue;
provider.IdToken.prototype.issue = async function issueFor(options) {
  const other = state().id_token_client;
  if (options?.use === 'idtoken' && other) {
    this.client = await provider.Client.find(other);
  }
  return issue.call(this, options);
};

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>
body{font-family:system-ui,sans-serif;background:#eef1f6;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
.card{background:#fff;padding:32px 36px;border-radius:10px;box-shadow:0 4px 20px rgba(0,0,0,.12);width:320px}
h1{font-size:20px;margin:0 0 4px}p{color:#555;margin:0 0 20px;font-size:14px}
label{display:block;font-size:13px;font-weight:600;margin:12px 0 4px}
input{width:100%;box-sizing:border-box;padding:9px;border:1px solid #bbb;border-radius:6px;font-size:15px}
button{margin-top:20px;width:100%;padding:10px;border:0;border-radius:6px;background:#3b4cca;color:#fff;font-size:15px}
.error{background:#fde8e8;color:#9b1c1c;padding:8px 10px;border-radius:6px;font-size:14px}
</style></head><body><main class="card">${body}</main></body></html>`;
}

function loginForm(uid, client, error = '', login = '') {
  const name = escape(config.name ?? 'Test Identity');
  return page(`Sign in to ${config.name ?? 'Test Identity'}`, `
<h1>${name}</h1>
<p>Sign in to continue to ${escape(client?.clientName ?? client?.clientId ?? 'the application')}.</p>
${error ? `<div class="error" role="alert">${escape(error)}</div>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <label for="login">Username</label>
  <input id="login" name="login" required value="${escape(login)}" autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button type="submit">Sign in</button>
</form>
<p style="margin-top:14px"><a href="/interaction/${escape(uid)}/abort">Cancel</a></p>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 100_000) throw new Error('body too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<h1>This sign-in has expired</h1>'));
  const client = await provider.Client.find(details.params.client_id);
  if (action === 'abort') {
    return provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The person cancelled the sign-in' }, { mergeWithLastSubmission: false });
  }
  if (details.prompt.name !== 'login') {
    // Consent is granted by loadExistingGrant; any other prompt finishes with what the session has.
    return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET' && !action) return send(res, 200, loginForm(uid, client));
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const account = state().accounts[login];
    if (!account || account.password !== form.get('password')) {
      return send(res, 200, loginForm(uid, client, 'Wrong username or password.', login));
    }
    return provider.interactionFinished(req, res, { login: { accountId: account.sub ?? login } }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, page('Error', '<h1>Not allowed</h1>'));
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, config.issuer);
  try {
    if (url.pathname === '/_test/stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(stats));
    }
    const match = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/);
    if (match) return await interaction(req, res, match[1], match[2]);
    if (url.pathname === '/jwks') {
      stats.jwks += 1;
      const hidden = new Set(state().hidden_kids ?? []);
      if (hidden.size) {
        const keys = config.keys.filter((k) => !hidden.has(k.kid)).map(({ kty, kid, use, alg, n, e }) => ({ kty, kid, use, alg, n, e }));
        res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
        return res.end(JSON.stringify({ keys }));
      }
    }
    if (url.pathname === '/token') stats.token += 1;
    if (url.pathname === '/.well-known/openid-configuration') stats.discovery += 1;
    return handle(req, res);
  } catch (err) {
    console.error(err);
    return send(res, 400, page('Error', `<h1>That did not work</h1><p>${escape(err.message)}</p>`));
  }
});

server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
