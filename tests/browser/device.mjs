// Browser tests of the device verification pages (RFC 8628 device flow), run by test.mjs
// (which passes in its helpers). A third `mcp-auth serve --dpop`, started by the first
// device test, has a local account (alice) and nothing else, so a valid code leads straight
// to the login + consent page. Our CLI is the device: `mcp-auth --json login MCP --device`
// prints the device authorization as one JSON line and polls; the test opens the
// verification page in Chromium and plays the person at the other device:
//   - the plain verification_uri, the code typed in lower case without the dash, by
//     keyboard only (Tab, Enter), then log in and approve: the CLI gets (DPoP-bound) tokens
//     and whoami is local:alice;
//   - the complete link prefills the code; Deny makes the CLI fail with "denied";
//   - a wrong code is refused on the entry page itself (400, an alert), and the page
//     then still takes the right code.
// Every page gets test.mjs's checks (headers, <html lang>, labels, no secret in a URL); the
// code entry and device consent pages are saved as device-code.png and device-consent.png.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** The user code alphabet of the server (RFC 8628 §6.1: 20 consonants), shown XXXX-XXXX. */
const CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;
const PHISHING = 'Only allow this if you started signing in on a device of your own just now';
const WRONG_CODE = 'That code is not valid or has expired. Check the code on your device.';

export function deviceTests(h) {
  const { check, newPage, checkPage, assertNoSecretInUrl, clickAndWait, pressAndWait, expectHeading } = h;
  const { buttonNames, tab, controls, shot, run, runToEnd, serve, freePort, whoami, work, PASSWORD, STEP } = h;

  let device; // { base, mcp, proc, out }, started once by the first device test
  let starting;

  /** The device server: `mcp-auth serve --dpop` with the local account alice. */
  function deviceServer() {
    starting ??= (async () => {
      const home = join(work, 'device-server');
      mkdirSync(home, { recursive: true });
      const add = await runToEnd(home, ['users', 'add', 'alice'], { input: `${PASSWORD}\n` });
      assert.equal(add.code, 0, `mcp-auth users add alice (device server) failed:\n${add.stdout}\n${add.stderr}`);
      device = await serve(home, await freePort(), {}, ['--dpop']);
      return device;
    })();
    return starting;
  }

  /** A test that prints the device server's log when it fails. */
  function dcheck(name, opts, fn) {
    check(name, opts, async (t) => {
      try {
        await fn(t);
      } catch (e) {
        if (device) console.error(`--- device server stderr (last lines):\n${device.out.stderr.split('\n').slice(-40).join('\n')}`);
        throw e;
      }
    });
  }

  /**
   * Starts `mcp-auth --json login MCP --device` in its own home; returns the device
   * authorization of its first stdout line (checked) and the CLI's exit promise.
   */
  async function startDeviceLogin(name) {
    const dev = await deviceServer();
    const home = join(work, `client-${name}`);
    mkdirSync(home, { recursive: true });
    const r = run(home, ['--json', 'login', dev.mcp, '--device']);
    let line;
    for (let i = 0; i < 300 && line === undefined; i++) {
      const nl = r.out.stdout.indexOf('\n');
      if (nl >= 0) line = r.out.stdout.slice(0, nl);
      else if (r.proc.exitCode !== null) break;
      else await sleep(50);
    }
    if (line === undefined) {
      r.proc.kill('SIGKILL');
      throw new Error(`mcp-auth login --device printed no device authorization:\n${r.out.stdout}\n${r.out.stderr}`);
    }
    let auth;
    try {
      auth = JSON.parse(line).device_authorization;
    } catch (e) {
      assert.fail(`${name}: the first line of mcp-auth --json login --device is not JSON (${e.message}): ${line}`);
    }
    assert.ok(auth, `${name}: no device_authorization in ${line}`);
    assert.equal(auth.verification_uri, `${dev.base}/device`, `${name}: verification_uri`);
    assert.match(auth.user_code, CODE, `${name}: user_code`);
    const complete = new URL(auth.verification_uri_complete);
    assert.equal(`${complete.origin}${complete.pathname}`, auth.verification_uri, `${name}: verification_uri_complete ${complete}`);
    assert.equal(complete.searchParams.get('user_code'), auth.user_code, `${name}: verification_uri_complete's user_code`);
    assert.ok(auth.expires_in > 0 && auth.interval > 0, `${name}: expires_in/interval in ${line}`);
    return { home, auth, login: r };
  }

  /** The CLI's exit: it polls every `interval` s, so allow one interval past STEP. */
  async function deviceLoginResult({ login, auth }) {
    const ms = STEP + auth.interval * 1000;
    const res = await Promise.race([login.exited, sleep(ms, null, { ref: false })]);
    if (!res) {
      login.proc.kill('SIGKILL');
      throw new Error(`mcp-auth login --device did not finish within ${ms} ms:\n${login.out.stdout}\n${login.out.stderr}`);
    }
    return res;
  }

  /** Every navigation to the device server carried no secret in its URL. */
  function checkDeviceNavigations(requests, what) {
    const origin = new URL(device.base).origin;
    for (const r of requests) {
      if (!r.nav || new URL(r.url).origin !== origin) continue;
      assertNoSecretInUrl(r.url, `${what}: navigation to ${r.url}`);
    }
  }

  /** The code entry page, just loaded (or reloaded after a wrong code). */
  async function expectEntry(page, response, what, { status = 200, value = '' } = {}) {
    assert.ok(response, `${what}: no response`);
    assert.equal(response.status(), status, `${what}: the code entry page answered ${response.status()}`);
    assert.equal(page.url(), response.url(), `${what}: redirected to ${page.url()}`);
    assert.equal(new URL(page.url()).pathname, '/device', `${what}: at ${page.url()}`);
    await expectHeading(page, 'Connect a device', what);
    const input = page.getByLabel('Code', { exact: true });
    assert.ok(await input.isVisible(), `${what}: no input labelled Code`);
    assert.equal(await input.getAttribute('name'), 'user_code', `${what}: the Code input's name`);
    assert.equal(await input.inputValue(), value, `${what}: the Code input's value`);
    assert.deepEqual(await buttonNames(page), ['Continue'], `${what}: buttons`);
    const help = (await page.locator('#code-help').textContent()) || '';
    assert.match(help, /never one that someone sent you/, `${what}: the hint under the code field says: ${help}`);
    await checkPage(page, response, what);
  }

  /** The device consent page: login fields, the phishing warning, no redirect target. */
  async function expectDeviceConsent(page, response, what) {
    assert.ok(response, `${what}: no response`);
    assert.equal(response.status(), 200, `${what}: consent page status ${response.status()}`);
    assert.equal(new URL(page.url()).origin, new URL(device.base).origin, `${what}: at ${page.url()}`);
    await expectHeading(page, 'Authorize', what);
    assert.ok(await page.getByLabel('Username').isVisible(), `${what}: no Username field`);
    assert.ok(await page.getByLabel('Password').isVisible(), `${what}: no Password field`);
    assert.deepEqual(await buttonNames(page), ['Log in and allow', 'Deny'], `${what}: buttons`);
    const text = (await page.locator('main').textContent()) || '';
    assert.ok(text.includes(PHISHING), `${what}: no phishing warning ("${PHISHING}…") on: ${text}`);
    assert.ok(!/your browser goes to/i.test(text), `${what}: a device consent names a redirect target: ${text}`);
    await checkPage(page, response, what);
  }

  /** The page after the decision. */
  async function expectDone(page, response, approved, what) {
    assert.ok(response, `${what}: no response`);
    assert.equal(response.status(), 200, `${what}: the final page answered ${response.status()}`);
    await expectHeading(page, approved ? 'Device connected' : 'Access denied', what);
    const status = (await page.getByRole('status').textContent()) || '';
    if (approved) assert.match(status, /You may return to your device/, `${what}: the final page says: ${status}`);
    else assert.match(status, /not given access/, `${what}: the final page says: ${status}`);
    await checkPage(page, response, what);
  }

  async function logInAndAllow(page, what) {
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill(PASSWORD);
    await expectDone(page, await clickAndWait(page, 'Log in and allow'), true, `${what} (done)`);
  }

  async function expectApproved(l, what) {
    const res = await deviceLoginResult(l);
    assert.equal(res.code, 0, `${what}: mcp-auth login --device failed (exit ${res.code}):\n${res.stdout}\n${res.stderr}`);
    const me = await whoami(l.home, device.mcp);
    assert.equal(me.sub, 'local:alice', `${what}: whoami says ${JSON.stringify(me)}`);
  }

  dcheck('device: the plain link, the code typed in lower case without the dash by keyboard, login, approve; whoami is local:alice', { timeout: 60_000 }, async () => {
    const what = 'device approve';
    const l = await startDeviceLogin('device-approve');
    const { context, page, requests } = await newPage();
    const entry = await page.goto(l.auth.verification_uri, { waitUntil: 'load' });
    await expectEntry(page, entry, `${what} (code entry)`);

    // Keyboard only: the code field is the first Tab stop, then Continue; nothing else.
    let w = `${what} (code entry, keyboard)`;
    assert.equal(await controls(page), 2, `${w}: expected two controls`);
    let f = await tab(page, w);
    assert.equal(f.id, 'code', `${w}: first Tab stop is ${f.key}, not the Code field`);
    const typed = l.auth.user_code.replace('-', '').toLowerCase();
    await page.keyboard.type(typed);
    f = await tab(page, w);
    assert.equal(f.text, 'Continue', `${w}: second Tab stop is ${f.key}`);
    f = await tab(page, w, 'Shift+Tab');
    assert.equal(f.id, 'code', `${w}: Shift+Tab from Continue reached ${f.key}`);
    assert.equal(await page.getByLabel('Code', { exact: true }).inputValue(), typed, `${w}: the typed code`);
    const consent = await pressAndWait(page, 'Enter');
    await expectDeviceConsent(page, consent, `${what} (consent)`);
    assert.ok(!page.url().includes(typed) && !page.url().toLowerCase().includes(typed), `${what}: the code is in the URL ${page.url()}`);
    await shot(page, 'device-consent.png');

    await logInAndAllow(page, what);
    checkDeviceNavigations(requests, what);
    assert.equal(requests.filter((r) => r.nav && r.method === 'POST').length, 2, `${what}: expected two form posts (code, consent)`);
    await context.close();
    await expectApproved(l, what);
  });

  dcheck('device: the complete link prefills the code; Deny makes the CLI fail with "denied"', { timeout: 60_000 }, async () => {
    const what = 'device deny';
    const l = await startDeviceLogin('device-deny');
    const { context, page, requests } = await newPage();
    const entry = await page.goto(l.auth.verification_uri_complete, { waitUntil: 'load' });
    await expectEntry(page, entry, `${what} (code entry)`, { value: l.auth.user_code });
    await shot(page, 'device-code.png');
    const consent = await clickAndWait(page, 'Continue');
    await expectDeviceConsent(page, consent, `${what} (consent)`);
    // Deny needs no password (formnovalidate): the fields stay empty.
    await expectDone(page, await clickAndWait(page, 'Deny'), false, `${what} (done)`);
    checkDeviceNavigations(requests, what);
    await context.close();

    const res = await deviceLoginResult(l);
    assert.notEqual(res.code, 0, `${what}: mcp-auth login --device succeeded:\n${res.stdout}\n${res.stderr}`);
    assert.match(res.stderr, /denied/i, `${what}: the CLI's stderr does not say it was denied:\n${res.stderr}`);
  });

  dcheck('device: a wrong code is refused on the page with an alert, then the right code still works', { timeout: 60_000 }, async () => {
    const what = 'device wrong code';
    const l = await startDeviceLogin('device-wrong');
    const { context, page, requests } = await newPage();
    await expectEntry(page, await page.goto(l.auth.verification_uri, { waitUntil: 'load' }), `${what} (code entry)`);

    // A well-formed code that is not the CLI's: the last letter changed.
    const last = l.auth.user_code.at(-1);
    const wrong = `${l.auth.user_code.slice(0, -1)}${last === 'B' ? 'C' : 'B'}`;
    const input = page.getByLabel('Code', { exact: true });
    await input.fill(wrong);
    const refused = await clickAndWait(page, 'Continue');
    await expectEntry(page, refused, `${what} (refused)`, { status: 400, value: wrong });
    const alert = page.getByRole('alert');
    assert.equal(await alert.count(), 1, `${what}: expected one alert on the refused page`);
    assert.equal(((await alert.textContent()) || '').trim(), WRONG_CODE, `${what}: the alert`);
    const described = (await input.getAttribute('aria-describedby')) || '';
    const alertId = await alert.getAttribute('id');
    assert.ok(alertId && described.split(/\s+/).includes(alertId), `${what}: the Code field is not described by the error (aria-describedby="${described}", alert id ${alertId})`);

    // The page still works: the right code, in another form (spaces instead of the dash).
    await input.fill(l.auth.user_code.replace('-', ' '));
    const consent = await clickAndWait(page, 'Continue');
    await expectDeviceConsent(page, consent, `${what} (consent)`);
    await logInAndAllow(page, what);
    checkDeviceNavigations(requests, what);
    await context.close();
    await expectApproved(l, what);
  });
}
