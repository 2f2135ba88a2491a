// A real OpenID Connect provider (oidc-provider) for the API tests.
//
// It issues JWT access tokens (audience "https://api.cairn.test") through the client-credentials grant;
// each client stands for a tenant and a set of roles, carried as the `tenant` and
// `roles` claims. Two test-only endpoints sit in front of it:
//   POST /__mint    {"claims": {...}, "key": "published" | "rogue", "typ"?, "kid"?}
//                   -> a signed JWT, for tokens the provider would never issue (expired,
//                   wrong audience or issuer, signed by a key it does not publish under a
//                   known kid, an ID token's `typ`, a made-up `kid`).
//   GET  /__stats   -> {"jwks": n}: how often the key set was fetched.
//   POST /__rotate  -> serve a new signing key first (the old one stays published).
// Environment: PORT (required), CAIRN_NODE_MODULES (where oidc-provider is installed).
// Prints "ready <issuer>" once listening.
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.CAIRN_NODE_MODULES;
const port = Number(process.env.PORT);
const { default: Provider } = await import(pathToFileURL(path.join(modules, 'oidc-provider/lib/index.js')).href);
const jose = await import(pathToFileURL(path.join(modules, 'jose/dist/webapi/index.js')).href);

const issuer = `http://127.0.0.1:${port}`;
const AUDIENCE = 'https://api.cairn.test';

async function rsaKey(kid) {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { privateKey, jwk: { ...jwk, kid, alg: 'RS256', use: 'sig' } };
}

const keyA = await rsaKey('key-a');
const keyB = await rsaKey('key-b');
// Same kid as the published key, different key material: a forged signature.
const rogue = await rsaKey('key-a');
let current = keyA;

// client id -> [tenant, roles]
const CLIENTS = {
  'acme-all': ['acme', ['user', 'admin', 'auditor']],
  'acme-admin': ['acme', ['admin']],
  'acme-user': ['acme', ['user']],
  'acme-auditor': ['acme', ['auditor']],
  'acme-none': ['acme', []],
  'globex-all': ['globex', ['user', 'admin', 'auditor']],
};

function makeProvider(keys) {
  const provider = new Provider(issuer, {
    jwks: { keys: keys.map((k) => k.jwk) },
    clients: Object.keys(CLIENTS).map((client_id) => ({
      client_id,
      client_secret: 'secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          audience: AUDIENCE,
          scope: 'api',
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => {
      const entry = CLIENTS[token.clientId];
      if (!entry) return undefined;
      return { tenant: entry[0], roles: entry[1] };
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let provider = makeProvider([keyA]);
let jwksFetches = 0;

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === 'GET' && req.url === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jwks: jwksFetches }));
      return;
    }
    if (req.url.startsWith('/jwks')) jwksFetches += 1;
    if (req.method === 'POST' && req.url === '/__mint') {
      const { claims, key, typ, kid } = JSON.parse(await readBody(req));
      const signer = key === 'rogue' ? rogue : current;
      const header = { alg: 'RS256', typ: typ === undefined ? 'at+jwt' : typ, kid: kid || signer.jwk.kid };
      if (header.typ === null) delete header.typ;
      const token = await new jose.SignJWT(claims)
        .setProtectedHeader(header)
        .sign(signer.privateKey);
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(token);
      return;
    }
    if (req.method === 'POST' && req.url === '/__rotate') {
      current = keyB;
      provider = makeProvider([keyB, keyA]);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kid: keyB.jwk.kid }));
      return;
    }
    provider.callback()(req, res);
  } catch (e) {
    res.writeHead(500);
    res.end(String(e));
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => process.exit(0));
