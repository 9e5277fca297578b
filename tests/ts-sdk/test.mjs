// Interoperability test: the official TypeScript MCP SDK client (@modelcontextprotocol/sdk)
// logs in to `mcp-auth serve --dev-auto-approve` and calls tools.
//
//   node test.mjs MCP_URL ISSUER
//
// MCP_URL and ISSUER are the two URLs `mcp-auth serve` prints ("MCP server:" and
// "Authorization server:"); they may also come from $MCP_URL and $MCP_ISSUER. run.sh starts the
// server and passes them.
//
// The flow is the SDK's documented one (see its examples/client/simpleOAuthClient): connect with
// an OAuthClientProvider, which registers the client (RFC 7591) and calls
// redirectToAuthorization(); connect throws UnauthorizedError; the application gets the code from
// the redirect and calls transport.finishAuth(code); then it connects again on a new transport.
// Here the "browser" is a fetch of the authorization URL with redirect: 'manual' (the server
// auto-approves), and the code, state and iss are read from the Location header.
//
// Exit status 0 on success, 1 with a message naming the failing step otherwise. Every HTTP
// exchange the SDK made is printed on failure (and always with VERBOSE=1).

import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

// The package's exports map does not expose package.json; read the installed copy.
const sdkVersion = JSON.parse(
    readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8')
).version;
const mcpUrl = process.argv[2] ?? process.env.MCP_URL;
const issuer = process.argv[3] ?? process.env.MCP_ISSUER;
const verbose = process.env.VERBOSE === '1';

// --- reporting -------------------------------------------------------------------------------

const trace = [];
let stepName = 'setup';

function step(name) {
    stepName = name;
    console.log(`-- ${name}`);
}

class TestFailure extends Error {}

function fail(message) {
    throw new TestFailure(message);
}

function check(cond, message) {
    if (!cond) fail(message);
}

function printTrace() {
    console.error('HTTP exchanges made by the SDK client (and the test\'s browser step):');
    for (const t of trace) console.error(`  ${t}`);
}

// Wraps fetch to record each exchange: the SDK uses the transport's `fetch` option both for MCP
// requests and for discovery, registration and token requests. Behaviour is unchanged.
function recordingFetch(label) {
    return async (input, init) => {
        const url = input instanceof Request ? input.url : String(input);
        const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
        let body = '';
        if (typeof init?.body === 'string') body = init.body;
        else if (init?.body instanceof URLSearchParams) body = init.body.toString();
        try {
            const res = await fetch(input, init);
            let summary = `${label} ${method} ${url} -> ${res.status}`;
            const www = res.headers.get('www-authenticate');
            if (www) summary += ` [WWW-Authenticate: ${www}]`;
            const loc = res.headers.get('location');
            if (loc) summary += ` [Location: ${loc}]`;
            if (body) summary += `\n      request body: ${redact(body)}`;
            if (res.status >= 400) {
                const text = await res.clone().text().catch(() => '');
                if (text) summary += `\n      response body: ${text.slice(0, 500)}`;
            }
            trace.push(summary);
            if (verbose) console.log(`   ${summary}`);
            return res;
        } catch (e) {
            trace.push(`${label} ${method} ${url} -> network error ${e}`);
            throw e;
        }
    };
}

function redact(s) {
    return s.replace(/((?:code|code_verifier|refresh_token|access_token)=)[^&]+/g, '$1…');
}

// --- the OAuthClientProvider ---------------------------------------------------------------

async function freePort() {
    return new Promise((resolve, reject) => {
        const srv = createServer();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** An in-memory OAuthClientProvider whose "browser" follows nothing: it fetches the
 * authorization URL once, without following redirects, and keeps the callback parameters. */
class InMemoryProvider {
    constructor(redirectUrl) {
        this._redirectUrl = redirectUrl;
        this._clientInformation = undefined;
        this._tokens = undefined;
        this._codeVerifier = undefined;
        this._state = undefined;
        this.authorizationUrls = [];
        this.callback = undefined; // { code, state, iss } from the redirect
        this.browserError = undefined;
        this.savedTokens = 0;
    }

    get redirectUrl() {
        return this._redirectUrl;
    }

    get clientMetadata() {
        return {
            client_name: `@modelcontextprotocol/sdk ${sdkVersion} interop test`,
            redirect_uris: [this._redirectUrl],
            token_endpoint_auth_method: 'none',
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code']
        };
    }

    state() {
        this._state = randomBytes(16).toString('base64url');
        return this._state;
    }

    clientInformation() {
        return this._clientInformation;
    }

    saveClientInformation(info) {
        this._clientInformation = info;
    }

    tokens() {
        return this._tokens;
    }

    saveTokens(tokens) {
        this._tokens = tokens;
        this.savedTokens++;
    }

    saveCodeVerifier(v) {
        this._codeVerifier = v;
    }

    codeVerifier() {
        if (!this._codeVerifier) throw new Error('no code verifier saved');
        return this._codeVerifier;
    }

    // The browser step. Errors are kept (not thrown) so that the test reports them as such
    // rather than as whatever the SDK makes of an exception from this callback.
    async redirectToAuthorization(url) {
        this.authorizationUrls.push(url);
        try {
            this.callback = await this._browse(url);
        } catch (e) {
            this.browserError = e;
        }
    }

    async _browse(url) {
        const browse = recordingFetch('browser');
        const res = await browse(url, { redirect: 'manual' });
        check(
            res.status >= 300 && res.status < 400,
            `GET ${url} answered ${res.status}, not a redirect (expected 303 from --dev-auto-approve; is the server running with it?): ${(await res.text()).slice(0, 200)}`
        );
        const location = res.headers.get('location');
        check(location, `GET ${url} answered ${res.status} without a Location header`);
        const back = new URL(location, url);
        const expected = new URL(this._redirectUrl);
        check(
            back.origin === expected.origin && back.pathname === expected.pathname,
            `the authorization response redirects to ${back.origin}${back.pathname}, not to redirect_uri ${this._redirectUrl}`
        );
        const p = back.searchParams;
        check(!p.get('error'), `the authorization server answered error=${p.get('error')}: ${p.get('error_description') ?? ''}`);
        return { status: res.status, code: p.get('code'), state: p.get('state'), iss: p.get('iss') };
    }
}

// --- the test --------------------------------------------------------------------------------

async function main() {
    check(mcpUrl && issuer, 'usage: node test.mjs MCP_URL ISSUER (or set $MCP_URL and $MCP_ISSUER)');
    console.log(`@modelcontextprotocol/sdk ${sdkVersion}, node ${process.version}`);
    console.log(`MCP server ${mcpUrl}, authorization server ${issuer}`);

    const port = await freePort();
    const provider = new InMemoryProvider(`http://127.0.0.1:${port}/callback`);
    const client = new Client({ name: 'mcp-auth-ts-sdk-interop', version: '0.0.0' });
    const newTransport = () =>
        new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: recordingFetch('sdk') });

    step('connect without a token: expect registration, an authorization redirect and UnauthorizedError');
    const first = newTransport();
    let connectError;
    try {
        await client.connect(first);
    } catch (e) {
        connectError = e;
    }
    if (provider.browserError) throw provider.browserError;
    check(connectError, 'the first connect succeeded without authorization: the MCP endpoint is not protected?');
    check(
        connectError instanceof UnauthorizedError,
        `the first connect threw ${connectError?.constructor?.name}, not UnauthorizedError: ${connectError?.stack ?? connectError}`
    );
    const info = provider.clientInformation();
    check(info?.client_id, 'the SDK did not register a client (saveClientInformation was not called with a client_id)');
    console.log(`   registered client_id ${info.client_id}`);
    check(provider.authorizationUrls.length === 1, `redirectToAuthorization was called ${provider.authorizationUrls.length} times`);

    step('check the authorization request the SDK built');
    const authUrl = provider.authorizationUrls[0];
    const q = authUrl.searchParams;
    check(authUrl.href.startsWith(`${issuer}/authorize`), `authorization URL ${authUrl} is not ${issuer}/authorize`);
    check(q.get('response_type') === 'code', `response_type=${q.get('response_type')}`);
    check(q.get('client_id') === info.client_id, `client_id=${q.get('client_id')}, registered ${info.client_id}`);
    check(q.get('code_challenge_method') === 'S256', `code_challenge_method=${q.get('code_challenge_method')}`);
    check(q.get('code_challenge'), 'no code_challenge');
    check(q.get('redirect_uri') === provider.redirectUrl, `redirect_uri=${q.get('redirect_uri')}`);
    check(q.get('resource') === mcpUrl, `resource=${q.get('resource')}, expected ${mcpUrl}`);
    check(q.get('state') === provider._state, `state=${q.get('state')}, the provider gave ${provider._state}`);

    step('check the authorization response (the browser step)');
    const cb = provider.callback;
    check(cb, 'redirectToAuthorization did not record a callback');
    console.log(`   ${cb.status} to redirect_uri with code, state and iss`);
    check(cb.code, 'the redirect carries no code');
    check(cb.state === provider._state, `state in the redirect is ${cb.state}, sent ${provider._state}`);
    check(cb.iss === issuer, `iss in the redirect is ${cb.iss}, expected the issuer ${issuer} (RFC 9207)`);

    step('transport.finishAuth(code): token request');
    await first.finishAuth(cb.code);
    const tokens = provider.tokens();
    check(tokens?.access_token, 'finishAuth did not save an access token');
    check(/^bearer$/i.test(tokens.token_type ?? ''), `token_type=${tokens.token_type}`);
    console.log(
        `   token_type ${tokens.token_type}, expires_in ${tokens.expires_in}, refresh_token ${tokens.refresh_token ? 'yes' : 'no'}, scope ${JSON.stringify(tokens.scope)}`
    );

    step('connect again with the token');
    const second = newTransport();
    await client.connect(second);
    console.log(`   server ${JSON.stringify(client.getServerVersion())}`);
    check(provider.authorizationUrls.length === 1, 'the second connect started another authorization');

    step('tools/list');
    const { tools } = await client.listTools();
    const names = tools.map(t => t.name);
    console.log(`   tools: ${names.join(', ')}`);
    check(names.includes('echo') && names.includes('whoami'), `tools/list lacks echo or whoami: ${names}`);

    step('tools/call whoami');
    const who = await client.callTool({ name: 'whoami', arguments: {} });
    check(!who.isError, `whoami returned isError: ${JSON.stringify(who)}`);
    const whoText = who.content?.find(c => c.type === 'text')?.text;
    check(typeof whoText === 'string', `whoami returned no text content: ${JSON.stringify(who)}`);
    let whoJson;
    try {
        whoJson = JSON.parse(whoText);
    } catch {
        fail(`whoami text is not JSON: ${whoText}`);
    }
    console.log(`   ${whoText}`);
    check(whoJson.subject === 'dev:user', `whoami subject=${JSON.stringify(whoJson.subject)}, expected "dev:user"`);
    check(whoJson.client_id === info.client_id, `whoami client_id=${whoJson.client_id}, the SDK registered ${info.client_id}`);

    step('tools/call echo {text:"hi"}');
    const echo = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    check(!echo.isError, `echo returned isError: ${JSON.stringify(echo)}`);
    const echoText = echo.content?.find(c => c.type === 'text')?.text;
    check(echoText === 'hi', `echo returned ${JSON.stringify(echo.content)}, expected text "hi"`);

    await client.close();
    console.log(`ts-sdk interop: OK (@modelcontextprotocol/sdk ${sdkVersion})`);
}

try {
    await main();
    process.exit(0);
} catch (e) {
    console.error(`\nts-sdk interop: FAILED at step "${stepName}"`);
    console.error(e instanceof TestFailure ? `  ${e.message}` : `  ${e?.stack ?? e}`);
    if (e?.cause) console.error(`  cause: ${e.cause?.stack ?? e.cause}`);
    printTrace();
    process.exit(1);
}
