// Browser test of the connector example app (examples/connector-app), in headless Chromium
// driven by playwright-core. `mcp-auth serve` is the authorization server and the protected
// demo MCP server (a local account alice, no auto-approve: its /authorize shows a login and
// consent page); the app lets its own users (alice, bob, carol: a toy sign-in) each connect
// their account on that MCP server through mcp-auth-connect.
//
// Environment: MCP_AUTH_BIN and CONNECTOR_APP_BIN (required), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT_DIR (default docs/screenshots of the repository).
// Every spawned process is killed at the end; the whole run is limited to 120 s.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const BIN = process.env.MCP_AUTH_BIN;
const APP_BIN = process.env.CONNECTOR_APP_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || join(root, 'docs/screenshots');
const PASSWORD = 'correct horse battery';
const VIEWPORT = { width: 900, height: 600 };
const STEP = 15_000; // one page transition, ms
const TOOLS = ['echo', 'whoami', 'notify'];

for (const [name, bin] of [['MCP_AUTH_BIN', BIN], ['CONNECTOR_APP_BIN', APP_BIN]]) {
  if (!bin || !existsSync(bin)) {
    console.error(`connector-app: ${name} is not set or not found (${bin})`);
    process.exit(1);
  }
}

// Overall limit: whatever hangs, kill everything and fail.
const watchdog = setTimeout(() => {
  console.error('connector-app: the tests did not finish within 120 s');
  killAll();
  process.exit(1);
}, 120_000);
watchdog.unref();

const work = mkdtempSync(join(tmpdir(), 'mcp-auth-connector-app-'));
const children = new Set();
let browser;
let as; // { base, mcp, proc, out }
let app; // { base, proc, out, dataDir }

function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
  children.clear();
}
process.on('exit', killAll);

// Loopback only: never through a proxy from the environment.
const NO_PROXY_ENV = { NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost' };

/** Spawns BIN ARGS; collects its output. */
function run(bin, args, { env = {}, input } = {}) {
  const proc = spawn(bin, args, {
    env: { ...process.env, BROWSER: '', MCP_AUTH_LOG: '', ...NO_PROXY_ENV, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(proc);
  const out = { stdout: '', stderr: '' };
  proc.stdout.on('data', (d) => (out.stdout += d));
  proc.stderr.on('data', (d) => (out.stderr += d));
  if (input !== undefined) proc.stdin.end(input);
  else proc.stdin.end();
  const exited = new Promise((res) => {
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      res({ code, signal, ...out });
    });
    proc.on('error', (e) => {
      children.delete(proc);
      res({ code: -1, signal: null, stdout: out.stdout, stderr: `${out.stderr}\nspawn: ${e.message}` });
    });
  });
  return { proc, out, exited };
}

async function runToEnd(bin, args, opts = {}, ms = STEP) {
  const r = run(bin, args, opts);
  const res = await Promise.race([r.exited, sleep(ms, 'timeout', { ref: false })]);
  if (res === 'timeout') {
    r.proc.kill('SIGKILL');
    throw new Error(`${bin} ${args.join(' ')}: no exit within ${ms} ms\n${r.out.stdout}\n${r.out.stderr}`);
  }
  return res;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Waits until every pattern matches the process's stdout; returns the first groups. */
async function waitFor(r, patterns, what) {
  for (let i = 0; i < 300; i++) {
    const m = patterns.map((p) => r.out.stdout.match(p));
    if (m.every(Boolean)) return m.map((x) => x[1]);
    if (r.proc.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`${what} did not start:\n${r.out.stdout}\n${r.out.stderr}`);
}

// ------------------------------------------------------------------ browser helpers

async function newPage() {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.setDefaultNavigationTimeout(STEP);
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), nav: r.isNavigationRequest(), method: r.method() }));
  return { context, page, requests };
}

const originOf = (u) => new URL(u).origin;

/** Protective headers, `<html lang>`, a label for every visible input or select. */
async function checkPage(page, response, what) {
  assert.ok(response, `${what}: no response`);
  const h = response.headers();
  const csp = h['content-security-policy'] || '';
  assert.match(csp, /frame-ancestors 'none'/, `${what}: content-security-policy lacks frame-ancestors 'none': ${JSON.stringify(csp)}`);
  const lang = await page.locator('html').getAttribute('lang');
  assert.ok(lang && lang.trim(), `${what}: <html> has no lang`);
  for (const input of await page.locator('input:not([type=hidden]), select').all()) {
    const id = await input.getAttribute('id');
    const name = await input.getAttribute('name');
    assert.ok(id, `${what}: control name=${name} has no id (so no <label for>)`);
    assert.equal(await page.locator(`label[for="${id}"]`).count(), 1, `${what}: #${id} has no <label for="${id}">`);
  }
  assertNoSecretInUrl(page.url(), what);
}

function assertNoSecretInUrl(u, what) {
  const bad = /[?&#](code|state)=|csrf|pending|client_secret|access_token|refresh_token/i;
  assert.ok(!bad.test(u), `${what}: a secret in the URL of the page: ${u}`);
}

/** Navigations to the app carried no secret, except the callback (the AS's redirect). */
function checkNavigations(requests, what) {
  for (const r of requests) {
    if (!r.nav || originOf(r.url) !== originOf(app.base)) continue;
    const u = new URL(r.url);
    if (u.pathname === '/connect/demo/callback') continue;
    assertNoSecretInUrl(r.url, `${what}: navigation to ${u.pathname}`);
  }
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

/** Clicks a control (by role and accessible name) and waits for the resulting navigation. */
async function clickAndWait(page, role, name) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.getByRole(role, { name, exact: true }).click(),
  ]);
  return response;
}

async function heading(page) {
  return ((await page.locator('h1').first().textContent({ timeout: STEP })) || '').trim();
}

/** The demo server's row on the app's home page. */
async function demoRow(page) {
  const status = page.locator('#status-demo');
  return {
    state: await status.getAttribute('data-state'),
    text: ((await status.textContent()) || '').trim(),
    tools: (await page.locator('#tools-demo li').allTextContents()).map((s) => s.trim()),
    toolsText: ((await page.locator('#tools-demo').textContent()) || '').trim(),
    connectLinks: await page.getByRole('link', { name: 'Connect', exact: true }).count(),
    disconnectButtons: await page.getByRole('button', { name: 'Disconnect', exact: true }).count(),
  };
}

/** `GET /connect/demo/status` with the context's cookies. */
async function statusJson(context) {
  const r = await context.request.get(`${app.base}/connect/demo/status`);
  assert.equal(r.status(), 200, `status: ${r.status()} ${await r.text()}`);
  return r.json();
}

/** Opens the app and signs in as `user`; returns the home page's response. */
async function signIn(page, user) {
  const what = `sign-in (${user})`;
  const resp = await page.goto(app.base, { waitUntil: 'load' });
  assert.equal(resp.status(), 200, `${what}: GET / answered ${resp.status()}`);
  assert.equal(await heading(page), 'Sign in', `${what}: heading`);
  await checkPage(page, resp, `${what} (sign-in page)`);
  await page.getByLabel('Demo user').selectOption(user);
  const home = await clickAndWait(page, 'button', 'Sign in');
  assert.equal(home.status(), 200, `${what}: home page ${home.status()}`);
  assert.equal(new URL(page.url()).pathname, '/', `${what}: ended at ${page.url()}`);
  assert.equal(await heading(page), 'Connections', `${what}: heading`);
  assert.equal(((await page.locator('#signed-in-user').textContent()) || '').trim(), user, `${what}: signed in as`);
  assert.match((await page.locator('header').textContent()) || '', new RegExp(`Signed in as ${user}`), `${what}: header`);
  await checkPage(page, home, `${what} (home)`);
  const cookie = (await page.context().cookies(app.base)).find((c) => c.name === 'connector_app_session');
  assert.ok(cookie, `${what}: no session cookie`);
  assert.ok(cookie.httpOnly, `${what}: the session cookie is not HttpOnly`);
  assert.equal(cookie.sameSite, 'Lax', `${what}: the session cookie's SameSite`);
  return home;
}

/** At the authorization server's login and consent page: checks it, logs in as alice. */
async function atConsent(page, response, what) {
  assert.equal(originOf(page.url()), originOf(as.base), `${what}: expected the authorization server's page, at ${page.url()}`);
  assert.equal(response.status(), 200, `${what}: consent page status ${response.status()}`);
  assert.match(await heading(page), /Authorize/, `${what}: consent heading`);
  assert.ok(await page.getByLabel('Username').isVisible(), `${what}: no Username field`);
  assert.ok(await page.getByLabel('Password').isVisible(), `${what}: no Password field`);
  const body = (await page.locator('body').textContent()) || '';
  assert.match(body, /Connector app \(example\)/, `${what}: the consent page does not name the app`);
}

// ------------------------------------------------------------------ setup / teardown

/** Starts the app on `port` and waits for its "Connector app:" line. */
async function startApp(port, dataDir) {
  const a = run(APP_BIN, ['--listen', `127.0.0.1:${port}`, '--mcp-url', as.mcp, '--data-dir', dataDir], {
    env: { CONNECTOR_VAULT_KEYS: '', CONNECTOR_COOKIE_KEYS: '' },
  });
  const [base] = await waitFor(a, [/^Connector app:\s*(\S+)/m], 'connector-app');
  assert.equal(base, `http://127.0.0.1:${port}`, 'the app printed another URL');
  return { base, port, proc: a.proc, out: a.out, exited: a.exited, dataDir };
}

/** Stops the app (Ctrl-C) and starts it again on the same port and data directory. */
async function restartApp() {
  app.proc.kill('SIGINT');
  const res = await Promise.race([app.exited, sleep(STEP, null, { ref: false })]);
  assert.ok(res, 'connector-app did not stop on SIGINT');
  assert.equal(res.code, 0, `connector-app exited with ${res.code} (${res.signal}):\n${res.stderr}`);
  app = await startApp(app.port, app.dataDir);
}

before(async () => {
  const t0 = Date.now();
  const home = join(work, 'as');
  mkdirSync(home, { recursive: true });
  const add = await runToEnd(BIN, ['users', 'add', 'alice'], { env: { MCP_AUTH_HOME: home }, input: `${PASSWORD}\n` });
  assert.equal(add.code, 0, `mcp-auth users add alice failed:\n${add.stdout}\n${add.stderr}`);
  const asPort = await freePort();
  const s = run(BIN, ['serve', '--listen', `127.0.0.1:${asPort}`], { env: { MCP_AUTH_HOME: home } });
  const [asBase, mcp] = await waitFor(s, [/^Authorization server:\s*(\S+)/m, /^MCP server:\s*(\S+)/m], 'mcp-auth serve');
  as = { base: asBase, mcp, proc: s.proc, out: s.out };

  app = await startApp(await freePort(), join(work, 'app-data'));

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  console.log(`# setup: ${Date.now() - t0} ms (authorization server ${as.base}, app ${app.base}, Chromium ${browser.version()})`);
});

after(async () => {
  try {
    await browser?.close();
  } catch {}
  if (failed) {
    for (const [name, s] of [['mcp-auth serve', as], ['connector-app', app]]) {
      if (s) console.error(`--- ${name} stderr (last lines):\n${s.out.stderr.split('\n').slice(-40).join('\n')}`);
    }
  }
  killAll();
  clearTimeout(watchdog);
  rmSync(work, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

let failed = false;
function check(name, opts, fn) {
  test(name, opts, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      failed = true;
      throw e;
    }
  });
}

check('keys and vault: in the data directory, mode 0600', { timeout: 10_000 }, async () => {
  for (const f of ['vault.key', 'cookie.key', 'vault.sqlite3']) {
    const st = statSync(join(app.dataDir, f));
    assert.equal(st.mode & 0o777, 0o600, `${f} has mode ${(st.mode & 0o777).toString(8)}`);
  }
});

check('alice connects, sees the tools, bob stays unconnected, alice disconnects', { timeout: 90_000 }, async () => {
  const alice = await newPage();
  const bob = await newPage();
  const { page, requests } = alice;
  await signIn(page, 'alice');
  let row = await demoRow(page);
  assert.equal(row.state, 'not-connected', `alice before: ${JSON.stringify(row)}`);
  assert.match(row.text, /^Not connected/, `alice before: ${row.text}`);
  assert.equal(row.connectLinks, 1, 'alice before: no Connect link');
  assert.equal(row.disconnectButtons, 0, 'alice before: a Disconnect button');
  assert.deepEqual(row.tools, [], 'alice before: tools listed');

  // Connect → the authorization server's login and consent page → back at the app.
  const consent = await clickAndWait(page, 'link', 'Connect');
  await atConsent(page, consent, 'alice connect');
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill(PASSWORD);
  const back = await clickAndWait(page, 'button', 'Log in and allow');
  await page.waitForURL((u) => originOf(u.toString()) === originOf(app.base), { timeout: STEP });
  assert.equal(back.status(), 200, `alice connect: back at the app with ${back.status()} at ${page.url()}: ${await page.locator('body').textContent()}`);
  const url = new URL(page.url());
  assert.equal(url.pathname, '/', `alice connect: ended at ${page.url()}`);
  assert.equal(url.searchParams.get('connected'), 'demo', `alice connect: ended at ${page.url()}`);
  await checkPage(page, back, 'alice connected (home)');
  assert.match((await page.getByRole('status').first().textContent()) || '', /Connected to Demo MCP/, 'alice connected: no message');
  row = await demoRow(page);
  assert.equal(row.state, 'connected', `alice connected: ${JSON.stringify(row)}`);
  assert.match(row.text, /^Connected/, `alice connected: ${row.text}`);
  assert.match(row.text, /expires in/, `alice connected: no expiry shown: ${row.text}`);
  assert.deepEqual([...row.tools].sort(), [...TOOLS].sort(), `alice connected: tools ${JSON.stringify(row)}`);
  assert.equal(row.disconnectButtons, 1, 'alice connected: no Disconnect button');
  assert.equal(row.connectLinks, 0, 'alice connected: still a Connect link');
  checkNavigations(requests, 'alice connect');
  const st = await statusJson(alice.context);
  assert.equal(st.connected, true, `alice status: ${JSON.stringify(st)}`);
  assert.equal(st.server, 'demo');
  assert.ok(st.expires_in > 0, `alice status: ${JSON.stringify(st)}`);
  // The state cookie is gone once the connection is finished.
  const left = (await alice.context.cookies(app.base)).filter((c) => c.name.startsWith('mcp_connect_'));
  assert.deepEqual(left.map((c) => c.name), [], 'alice: the state cookie is still set');
  await shot(page, 'connector-app.png');

  // Bob, in another browser, is not connected while alice is.
  await signIn(bob.page, 'bob');
  const brow = await demoRow(bob.page);
  assert.equal(brow.state, 'not-connected', `bob: ${JSON.stringify(brow)}`);
  assert.deepEqual(brow.tools, [], 'bob: tools listed');
  assert.equal(brow.connectLinks, 1, 'bob: no Connect link');
  assert.equal((await statusJson(bob.context)).connected, false, 'bob: status says connected');
  // Alice still is (a reload lists the tools again, with her token).
  await page.goto(app.base, { waitUntil: 'load' });
  row = await demoRow(page);
  assert.equal(row.state, 'connected', `alice after bob: ${JSON.stringify(row)}`);
  assert.deepEqual([...row.tools].sort(), [...TOOLS].sort(), `alice after bob: ${JSON.stringify(row)}`);

  // Restart the app: the connection is in the vault file, sealed with the key in the data
  // directory. The app's own sessions are in memory: alice signs in again.
  await restartApp();
  await signIn(page, 'alice');
  row = await demoRow(page);
  assert.equal(row.state, 'connected', `alice after a restart: ${JSON.stringify(row)}`);
  assert.deepEqual([...row.tools].sort(), [...TOOLS].sort(), `alice after a restart: ${JSON.stringify(row)}`);

  // Disconnect.
  const gone = await clickAndWait(page, 'button', 'Disconnect');
  assert.equal(gone.status(), 200, `disconnect: ${gone.status()} at ${page.url()}`);
  assert.equal(new URL(page.url()).searchParams.get('disconnected'), 'demo', `disconnect: ended at ${page.url()}`);
  assert.match((await page.getByRole('status').first().textContent()) || '', /Disconnected from Demo MCP/, 'disconnect: no message');
  row = await demoRow(page);
  assert.equal(row.state, 'not-connected', `alice after disconnect: ${JSON.stringify(row)}`);
  assert.deepEqual(row.tools, [], 'alice after disconnect: tools listed');
  assert.equal(row.connectLinks, 1, 'alice after disconnect: no Connect link');
  assert.equal((await statusJson(alice.context)).connected, false, 'alice after disconnect: status says connected');
  await alice.context.close();
  await bob.context.close();
});

check('deny: back at the app with an error message, still not connected', { timeout: 60_000 }, async () => {
  const { context, page, requests } = await newPage();
  await signIn(page, 'carol');
  const consent = await clickAndWait(page, 'link', 'Connect');
  await atConsent(page, consent, 'carol deny');
  const back = await clickAndWait(page, 'button', 'Deny');
  await page.waitForURL((u) => originOf(u.toString()) === originOf(app.base), { timeout: STEP });
  assert.equal(back.status(), 200, `deny: back at the app with ${back.status()} at ${page.url()}`);
  assert.equal(new URL(page.url()).searchParams.get('connect_error'), 'access_denied', `deny: ended at ${page.url()}`);
  const alert = (await page.getByRole('alert').first().textContent()) || '';
  assert.match(alert, /Connecting Demo MCP did not complete: access_denied/, `deny: message ${alert}`);
  // Not connected (a first attempt that was denied is not a connection to repair).
  const row = await demoRow(page);
  assert.equal(row.state, 'not-connected', `deny: ${JSON.stringify(row)}`);
  assert.equal((await statusJson(context)).needs_reconnect, false, 'deny: status says needs_reconnect');
  assert.equal(row.connectLinks, 1, `deny: no Connect link: ${JSON.stringify(row)}`);
  assert.deepEqual(row.tools, [], `deny: tools listed: ${JSON.stringify(row)}`);
  assert.equal((await statusJson(context)).connected, false, 'deny: status says connected');
  checkNavigations(requests, 'deny');
  await context.close();
});

check('sign-out, and a cross-site sign-in is refused', { timeout: 30_000 }, async () => {
  const { context, page } = await newPage();
  await signIn(page, 'bob');
  await clickAndWait(page, 'button', 'Sign out');
  assert.equal(await heading(page), 'Sign in', 'sign-out: not back at the sign-in page');
  assert.equal(
    (await context.cookies(app.base)).filter((c) => c.name === 'connector_app_session').length,
    0,
    'sign-out: the session cookie is still set',
  );
  // The connector's routes need a signed-in user.
  const r = await context.request.get(`${app.base}/connect/demo/status`);
  assert.equal(r.status(), 401, `status when signed out: ${r.status()}`);
  const x = await context.request.post(`${app.base}/signin`, {
    form: { user: 'alice' },
    headers: { origin: 'https://evil.example' },
    maxRedirects: 0,
  });
  assert.equal(x.status(), 403, `cross-site sign-in: ${x.status()}`);
  await context.close();
});
