// Browser tests of the authorization server's pages, in headless Chromium driven by
// playwright-core. Two `mcp-auth serve` instances are chained: UPSTREAM has a local account
// (alice) and no auto-approve; DOWNSTREAM offers local accounts and UPSTREAM as an OpenID
// Connect provider ("Example SSO"), so it shows the provider-choice page. Our CLI is the MCP
// client: `mcp-auth login --browser SCRIPT` hands the authorization URL to a script that
// saves it; the test opens it in Chromium and plays the person at the browser. The device
// flow (RFC 8628) tests are in device.mjs: they run last, on a third `mcp-auth serve --dpop`
// of their own, with test.mjs's helpers (passed to deviceTests()).
//
// Environment: MCP_AUTH_BIN (the mcp-auth binary, required), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT_DIR (default docs/screenshots of the repository).
// Every spawned process is killed at the end; the whole run is limited to 120 s.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, existsSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { deviceTests } from './device.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const BIN = process.env.MCP_AUTH_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || join(root, 'docs/screenshots');
const PASSWORD = 'correct horse battery';
const VIEWPORT = { width: 900, height: 700 };
const STEP = 15_000; // one page transition or one CLI step, ms

if (!BIN || !existsSync(BIN)) {
  console.error(`browser: MCP_AUTH_BIN is not set or not found (${BIN})`);
  process.exit(1);
}

// Overall limit: whatever hangs, kill everything and fail.
const watchdog = setTimeout(() => {
  console.error('browser: the tests did not finish within 120 s');
  killAll();
  process.exit(1);
}, 120_000);
watchdog.unref();

const work = mkdtempSync(join(tmpdir(), 'mcp-auth-browser-'));
const children = new Set();
let browser;
let upstream; // { base, proc, out }
let downstream; // { base, mcp, proc, out }

function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
  children.clear();
}
process.on('exit', killAll);

/** Spawns `mcp-auth ARGS` with MCP_AUTH_HOME=home; collects its output. */
function run(home, args, { env = {}, input } = {}) {
  const proc = spawn(BIN, args, {
    env: { ...process.env, MCP_AUTH_HOME: home, BROWSER: '', MCP_AUTH_LOG: '', ...env },
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

/** `mcp-auth ARGS` to completion, within `ms`. */
async function runToEnd(home, args, opts = {}, ms = STEP) {
  const r = run(home, args, opts);
  const t = sleep(ms, 'timeout', { ref: false });
  const res = await Promise.race([r.exited, t]);
  if (res === 'timeout') {
    r.proc.kill('SIGKILL');
    throw new Error(`mcp-auth ${args.join(' ')}: no exit within ${ms} ms\n${r.out.stdout}\n${r.out.stderr}`);
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

/** Starts `mcp-auth serve [ARGS]` and waits for its "Authorization server:" line. */
async function serve(home, port, env = {}, args = []) {
  mkdirSync(home, { recursive: true });
  const r = run(home, ['serve', '--listen', `127.0.0.1:${port}`, ...args], { env });
  for (let i = 0; i < 300; i++) {
    const as = r.out.stdout.match(/^Authorization server:\s*(\S+)/m);
    const mcp = r.out.stdout.match(/^MCP server:\s*(\S+)/m);
    if (as && mcp) return { base: as[1], mcp: mcp[1], proc: r.proc, out: r.out };
    if (r.proc.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`mcp-auth serve (${home}) did not start:\n${r.out.stdout}\n${r.out.stderr}`);
}

/**
 * Starts `mcp-auth login` in its own home with a browser script that saves the URL; returns
 * the authorization URL and the CLI's exit promise.
 */
async function startLogin(name) {
  const home = join(work, `client-${name}`);
  mkdirSync(home, { recursive: true });
  const script = join(home, 'browser.sh');
  writeFileSync(script, `#!/bin/sh\nprintf '%s' "$1" > '${home}/url.tmp' && mv '${home}/url.tmp' '${home}/url'\n`);
  chmodSync(script, 0o755);
  const r = run(home, [
    'login', downstream.mcp, '--name', name, '--browser', script,
    '--callback-port', '0', '--auth-timeout', '60',
  ]);
  for (let i = 0; i < 300; i++) {
    if (existsSync(join(home, 'url'))) {
      return { home, url: readFileSync(join(home, 'url'), 'utf8'), login: r };
    }
    if (r.proc.exitCode !== null) break;
    await sleep(50);
  }
  r.proc.kill('SIGKILL');
  throw new Error(`mcp-auth login never opened a browser:\n${r.out.stdout}\n${r.out.stderr}`);
}

/** Waits for the CLI's exit (after the browser reached its loopback redirect). */
async function loginResult({ login }) {
  const res = await Promise.race([login.exited, sleep(STEP, null, { ref: false })]);
  if (!res) {
    login.proc.kill('SIGKILL');
    throw new Error(`mcp-auth login did not finish:\n${login.out.stdout}\n${login.out.stderr}`);
  }
  return res;
}

/** `whoami` through the stored login (to `mcp`); returns the parsed tool result. */
async function whoami(home, mcp = downstream.mcp) {
  const res = await runToEnd(home, ['test', mcp, '--call', 'whoami', '--json', '--browser', 'false', '--auth-timeout', '10']);
  assert.equal(res.code, 0, `mcp-auth test --call whoami failed (exit ${res.code}):\n${res.stdout}\n${res.stderr}`);
  let v;
  try {
    v = JSON.parse(res.stdout.trim());
  } catch (e) {
    assert.fail(`whoami printed no JSON (${e.message}): ${res.stdout}`);
  }
  const text = v?.result?.content?.[0]?.text ?? v?.content?.[0]?.text;
  assert.ok(text, `no tool text in ${res.stdout}`);
  return JSON.parse(text);
}

// ------------------------------------------------------------------ browser helpers

/** A fresh browser context (own cookies) with a page that records every request. */
async function newPage({ javaScriptEnabled = true } = {}) {
  const context = await browser.newContext({ viewport: VIEWPORT, javaScriptEnabled });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.setDefaultNavigationTimeout(STEP);
  const requests = [];
  page.on('request', (r) => requests.push({ url: r.url(), nav: r.isNavigationRequest(), method: r.method() }));
  return { context, page, requests };
}

function originOf(u) {
  return new URL(u).origin;
}

/** Whether a URL is one of our servers' pages (not the CLI's loopback). */
function ours(u) {
  const o = originOf(u);
  return o === originOf(downstream.base) || o === originOf(upstream.base);
}

/**
 * The checks every page of ours must pass: protective headers, `<html lang>`, a label for
 * every visible input, and no secret in its URL.
 */
async function checkPage(page, response, what) {
  assert.ok(response, `${what}: no response`);
  const h = response.headers();
  const csp = h['content-security-policy'] || '';
  assert.match(csp, /frame-ancestors 'none'/, `${what}: content-security-policy lacks frame-ancestors 'none': ${JSON.stringify(csp)}`);
  assert.equal((h['x-frame-options'] || '').toUpperCase(), 'DENY', `${what}: x-frame-options is ${JSON.stringify(h['x-frame-options'])}`);
  const lang = await page.locator('html').getAttribute('lang');
  assert.ok(lang && lang.trim(), `${what}: <html> has no lang`);
  const inputs = await page.locator('input:not([type=hidden])').all();
  for (const input of inputs) {
    const id = await input.getAttribute('id');
    const name = await input.getAttribute('name');
    assert.ok(id, `${what}: input name=${name} has no id (so no <label for>)`);
    assert.equal(await page.locator(`label[for="${id}"]`).count(), 1, `${what}: input #${id} has no <label for="${id}">`);
  }
  assertNoSecretInUrl(page.url(), what);
}

function assertNoSecretInUrl(u, what) {
  const bad = /[?&#]code=|csrf|pending|client_secret/i;
  assert.ok(!bad.test(u), `${what}: a secret in the URL of our page: ${u}`);
}

/**
 * Every navigation to our servers carried no secret in its URL. The exception by design: a
 * redirect to a client's redirect URI with `code` (the downstream is the upstream's client,
 * at /oauth/callback).
 */
function checkNavigations(requests, what) {
  for (const r of requests) {
    if (!r.nav || !ours(r.url)) continue;
    const u = new URL(r.url);
    if (originOf(r.url) === originOf(downstream.base) && u.pathname === '/oauth/callback') continue;
    assertNoSecretInUrl(r.url, `${what}: navigation to ${u.origin}${u.pathname}`);
  }
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, name), fullPage: true });
}

/** Clicks a button (by its accessible name) and waits for the resulting navigation. */
async function clickAndWait(page, name) {
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.getByRole('button', { name, exact: true }).click(),
  ]);
  return response;
}

async function expectHeading(page, text, what) {
  const h1 = (await page.locator('h1').first().textContent({ timeout: STEP })) || '';
  assert.ok(h1.includes(text), `${what}: expected the heading "${text}", got "${h1}" at ${page.url()}`);
}

async function buttonNames(page) {
  return (await page.locator('button').allTextContents()).map((s) => s.trim());
}

/** The provider-choice page: opens the authorization URL. */
async function openChoice(page, url, what) {
  const response = await page.goto(url, { waitUntil: 'load' });
  assert.equal(response.status(), 200, `${what}: GET /authorize answered ${response.status()}`);
  await expectHeading(page, 'Sign in to continue', `${what} (provider choice)`);
  const names = await buttonNames(page);
  assert.deepEqual(names, ['Continue with Username and password', 'Continue with Example SSO'], `${what}: provider buttons`);
  await checkPage(page, response, `${what} (provider choice)`);
  return response;
}

async function expectConsent(page, response, what) {
  assert.equal(response.status(), 200, `${what}: consent page status ${response.status()}`);
  await expectHeading(page, 'Authorize', `${what} (consent)`);
  const names = await buttonNames(page);
  assert.deepEqual(names, ['Allow and continue with Example SSO', 'Deny'], `${what}: consent buttons`);
  assert.equal(originOf(page.url()), originOf(downstream.base), `${what}: the consent page is not the downstream's`);
  await checkPage(page, response, `${what} (consent)`);
}

async function expectUpstreamLogin(page, response, what) {
  assert.equal(originOf(page.url()), originOf(upstream.base), `${what}: expected the upstream's page, at ${page.url()}`);
  assert.equal(response.status(), 200, `${what}: upstream page status ${response.status()}`);
  await expectHeading(page, 'Authorize', `${what} (upstream login)`);
  assert.ok(await page.getByLabel('Username').isVisible(), `${what}: no Username field upstream`);
  assert.ok(await page.getByLabel('Password').isVisible(), `${what}: no Password field upstream`);
  assert.deepEqual(await buttonNames(page), ['Log in and allow', 'Deny'], `${what}: upstream buttons`);
  await checkPage(page, response, `${what} (upstream login)`);
}

async function expectLoopbackDone(page, what) {
  await page.waitForURL((u) => !ours(u.toString()), { timeout: STEP });
  const body = (await page.locator('body').textContent()) || '';
  assert.match(body, /Authorization complete/, `${what}: the CLI's loopback page says: ${body}`);
}

/** The whole approve flow by mouse clicks: choice → consent → upstream login → CLI. */
async function approveFlow(name, { javaScriptEnabled = true, screenshots = false } = {}) {
  const what = `${name}${javaScriptEnabled ? '' : ' (no JavaScript)'}`;
  const { context, page, requests } = await newPage({ javaScriptEnabled });
  if (!javaScriptEnabled) {
    // Make sure scripts really do not run in this context.
    const probe = await context.newPage();
    await probe.setContent('<title>no</title><script>document.title = "yes"</script>');
    assert.equal(await probe.title(), 'no', `${what}: JavaScript still runs in the context`);
    await probe.close();
  }
  const l = await startLogin(name);
  assert.equal(originOf(l.url), originOf(downstream.base), `${what}: the CLI opened ${l.url}`);
  await openChoice(page, l.url, what);
  if (screenshots) await shot(page, 'provider-choice.png');

  const consent = await clickAndWait(page, 'Continue with Example SSO');
  await expectConsent(page, consent, what);
  assert.ok(!requests.some((r) => originOf(r.url) === originOf(upstream.base)), `${what}: the upstream was contacted before consent`);
  if (screenshots) await shot(page, 'consent.png');

  const up = await clickAndWait(page, 'Allow and continue with Example SSO');
  await expectUpstreamLogin(page, up, what);
  if (screenshots) await shot(page, 'upstream-login.png');

  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill(PASSWORD);
  await clickAndWait(page, 'Log in and allow');
  await expectLoopbackDone(page, what);
  checkNavigations(requests, what);

  const res = await loginResult(l);
  assert.equal(res.code, 0, `${what}: mcp-auth login failed (exit ${res.code}):\n${res.stdout}\n${res.stderr}`);
  const me = await whoami(l.home);
  assert.equal(me.sub, 'sso:local:alice', `${what}: whoami says ${JSON.stringify(me)}`);
  return { context, page, requests };
}

// ------------------------------------------------------------------ setup / teardown

before(async () => {
  const t0 = Date.now();
  // UPSTREAM: a local account, no auto-approve.
  const uhome = join(work, 'upstream');
  mkdirSync(uhome, { recursive: true });
  const add = await runToEnd(uhome, ['users', 'add', 'alice'], { input: `${PASSWORD}\n` });
  assert.equal(add.code, 0, `mcp-auth users add alice failed:\n${add.stdout}\n${add.stderr}`);
  upstream = await serve(uhome, await freePort());

  // DOWNSTREAM: registered at UPSTREAM as a confidential client, on a port chosen first.
  const dport = await freePort();
  const reg = await fetch(`${upstream.base}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      redirect_uris: [`http://127.0.0.1:${dport}/oauth/callback`],
      client_name: 'Example SSO client',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
    }),
  });
  const client = await reg.json();
  assert.ok(reg.ok, `registration at the upstream: ${reg.status} ${JSON.stringify(client)}`);
  assert.ok(client.client_id && client.client_secret, `registration: ${JSON.stringify(client)}`);
  const dhome = join(work, 'downstream');
  mkdirSync(dhome, { recursive: true });
  writeFileSync(join(dhome, 'server.toml'), `local_accounts = true

[[upstream]]
kind = "oidc"
id = "sso"
label = "Example SSO"
issuer = "${upstream.base}"
client_id = "${client.client_id}"
client_secret_env = "SSO_SECRET"
userinfo = true
allow_http = true
`);
  downstream = await serve(dhome, dport, { SSO_SECRET: client.client_secret });

  // launch() starts Chromium with a fresh, temporary --user-data-dir of its own (removed at
  // close); every test then takes a new context (its own cookies).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  console.log(`# setup: ${Date.now() - t0} ms (upstream ${upstream.base}, downstream ${downstream.base}, Chromium ${browser.version()})`);
});

after(async () => {
  try {
    await browser?.close();
  } catch {}
  if (failed) {
    for (const [name, s] of [['upstream', upstream], ['downstream', downstream]]) {
      if (s) console.error(`--- ${name} server stderr (last lines):\n${s.out.stderr.split('\n').slice(-40).join('\n')}`);
    }
  }
  killAll();
  clearTimeout(watchdog);
  rmSync(work, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

let failed = false;
/** A test whose failure also prints the servers' logs at the end. */
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

let approved; // the browser context of the first approve run (signed in downstream)

check('approve: provider choice, consent, upstream login, whoami is sso:local:alice', { timeout: 60_000 }, async () => {
  approved = await approveFlow('approve', { screenshots: true });
});

check('sign-out: the sign-out form, then the signed-out page', { timeout: 30_000 }, async () => {
  assert.ok(approved, 'needs the approve test');
  const { page } = approved;
  const form = await page.goto(`${downstream.base}/logout`, { waitUntil: 'load' });
  assert.equal(form.status(), 200, `GET /logout: ${form.status()}`);
  await expectHeading(page, 'Sign out', 'sign-out form');
  const who = (await page.locator('main').textContent()) || '';
  assert.match(who, /signed in as sso:local:alice/, `sign-out form: ${who}`);
  await checkPage(page, form, 'sign-out form');
  const done = await clickAndWait(page, 'Sign out');
  assert.equal(done.status(), 200, `POST /logout: ${done.status()}`);
  await expectHeading(page, 'You are signed out', 'signed-out page');
  await checkPage(page, done, 'signed-out page');
  await shot(page, 'logged-out.png');
  await approved.context.close();
});

check('error page: an unknown client is refused on a page, not redirected', { timeout: 30_000 }, async () => {
  const { context, page } = await newPage();
  const resp = await page.goto(`${downstream.base}/authorize?client_id=unknown`, { waitUntil: 'load' });
  assert.ok(resp.status() >= 400 && resp.status() < 500, `GET /authorize?client_id=unknown answered ${resp.status()}`);
  assert.equal(originOf(page.url()), originOf(downstream.base), `the error redirected to ${page.url()}`);
  await expectHeading(page, 'This authorization request cannot continue', 'error page');
  await checkPage(page, resp, 'error page');
  await shot(page, 'error.png');
  await context.close();
});

check('deny: the CLI gets access_denied and nothing is sent upstream', { timeout: 60_000 }, async () => {
  const what = 'deny';
  const { context, page, requests } = await newPage();
  const l = await startLogin('deny');
  await openChoice(page, l.url, what);
  const consent = await clickAndWait(page, 'Continue with Example SSO');
  await expectConsent(page, consent, what);
  await clickAndWait(page, 'Deny');
  await page.waitForURL((u) => !ours(u.toString()), { timeout: STEP });
  const body = (await page.locator('body').textContent()) || '';
  assert.match(body, /did not complete/, `deny: the CLI's loopback page says: ${body}`);
  const res = await loginResult(l);
  assert.notEqual(res.code, 0, `deny: mcp-auth login succeeded:\n${res.stdout}\n${res.stderr}`);
  assert.match(`${res.stdout}\n${res.stderr}`, /access_denied|denied/i, `deny: the CLI's message does not say it was denied:\n${res.stdout}\n${res.stderr}`);
  const upstreamHits = requests.filter((r) => originOf(r.url) === originOf(upstream.base));
  assert.deepEqual(upstreamHits.map((r) => r.url), [], 'deny: the browser was sent to the upstream');
  checkNavigations(requests, what);
  await context.close();
});

/** Presses Tab (or Shift+Tab) and describes the focused element; it must show its focus. */
async function tab(page, what, key = 'Tab') {
  await page.keyboard.press(key);
  const f = await page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const cs = getComputedStyle(el);
    return {
      tag: el.tagName.toLowerCase(),
      id: el.id,
      text: (el.textContent || '').trim(),
      focusVisible: el.matches(':focus-visible'),
      outlineStyle: cs.outlineStyle,
      outlineWidth: parseFloat(cs.outlineWidth) || 0,
    };
  });
  assert.ok(f, `${what}: ${key} left the page's controls`);
  f.key = `${f.tag}${f.id ? `#${f.id}` : ''}${f.text ? ` "${f.text}"` : ''}`;
  assert.ok(f.focusVisible, `${what}: ${f.key} is focused but not :focus-visible`);
  assert.ok(f.outlineStyle !== 'none' && f.outlineWidth >= 2, `${what}: no visible focus outline on ${f.key} (${f.outlineStyle} ${f.outlineWidth}px)`);
  return f;
}

/** The focusable controls of the page, in document order. */
async function controls(page) {
  return page.locator('button, a[href], input:not([type=hidden]), select, textarea').count();
}

/** Presses a key and waits for the navigation it starts. */
async function pressAndWait(page, key) {
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press(key)]);
  return response;
}

check('keyboard only: Tab order, visible focus, Enter through the whole flow', { timeout: 60_000 }, async () => {
  const what = 'keyboard';
  const { context, page, requests } = await newPage();
  const l = await startLogin('keyboard');
  await openChoice(page, l.url, what);
  const stylesheet = await page.locator('style').first().textContent();
  assert.match(stylesheet || '', /:focus-visible\s*\{[^}]*outline/, `${what}: the page has no :focus-visible outline style`);

  // Provider choice: both options reachable by Tab, in page order; Enter on Example SSO.
  let w = `${what} (provider choice)`;
  assert.equal(await controls(page), 2, `${w}: expected two controls`);
  let f = await tab(page, w);
  assert.equal(f.text, 'Continue with Username and password', `${w}: first Tab stop is ${f.key}`);
  f = await tab(page, w);
  assert.equal(f.text, 'Continue with Example SSO', `${w}: second Tab stop is ${f.key}`);
  const consent = await pressAndWait(page, 'Enter');
  await expectConsent(page, consent, what);

  // Consent: the approve button is the first control Tab reaches, then Deny; nothing else
  // is focusable. Back to approve with Shift+Tab, Enter.
  w = `${what} (consent)`;
  const order = [];
  const n = await controls(page);
  for (let i = 0; i < n; i++) order.push(await tab(page, w));
  assert.deepEqual(
    order.map((x) => x.text),
    ['Allow and continue with Example SSO', 'Deny'],
    `${w}: Tab order ${order.map((x) => x.key).join(' → ')}`,
  );
  f = await tab(page, w, 'Shift+Tab');
  assert.equal(f.text, 'Allow and continue with Example SSO', `${w}: Shift+Tab from Deny reached ${f.key}`);
  const up = await pressAndWait(page, 'Enter');
  await expectUpstreamLogin(page, up, what);

  // Upstream: Username, Password, approve, Deny; typing into the focused fields.
  w = `${what} (upstream login)`;
  assert.equal(await controls(page), 4, `${w}: expected four controls`);
  f = await tab(page, w);
  assert.equal(f.id, 'u', `${w}: first Tab stop is ${f.key}, not Username`);
  await page.keyboard.type('alice');
  f = await tab(page, w);
  assert.equal(f.id, 'p', `${w}: second Tab stop is ${f.key}, not Password`);
  await page.keyboard.type(PASSWORD);
  f = await tab(page, w);
  assert.equal(f.text, 'Log in and allow', `${w}: third Tab stop is ${f.key}`);
  f = await tab(page, w);
  assert.equal(f.text, 'Deny', `${w}: fourth Tab stop is ${f.key}`);
  f = await tab(page, w, 'Shift+Tab');
  assert.equal(f.text, 'Log in and allow', `${w}: Shift+Tab from Deny reached ${f.key}`);
  assert.equal(await page.getByLabel('Username').inputValue(), 'alice', `${w}: the typed username`);
  await pressAndWait(page, 'Enter');
  await expectLoopbackDone(page, what);
  checkNavigations(requests, what);
  const res = await loginResult(l);
  assert.equal(res.code, 0, `${what}: mcp-auth login failed (exit ${res.code}):\n${res.stdout}\n${res.stderr}`);
  const me = await whoami(l.home);
  assert.equal(me.sub, 'sso:local:alice', `${what}: whoami says ${JSON.stringify(me)}`);
  await context.close();
});

check('without JavaScript: the whole approve flow works', { timeout: 60_000 }, async () => {
  const { context } = await approveFlow('nojs', { javaScriptEnabled: false });
  await context.close();
});

// ------------------------------------------------------------------ device flow (device.mjs)

deviceTests({
  check, newPage, checkPage, assertNoSecretInUrl, clickAndWait, pressAndWait, expectHeading,
  buttonNames, tab, controls, shot, run, runToEnd, serve, freePort, whoami,
  work, PASSWORD, STEP,
});
