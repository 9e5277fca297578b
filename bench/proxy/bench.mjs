// mcp-auth proxy vs mcp-remote, side by side in one run against the same local server, both
// driven by the official TypeScript SDK's stdio client (as Claude Desktop drives them):
// - start: spawn → initialize → first tools/list answer (median of ROUNDS cold starts);
// - added latency: tools/call echo through the proxy, minus the same call made directly over
//   streamable HTTP (median of CALLS sequential calls each);
// - resident memory (VmRSS of the proxy process after the calls; for mcp-remote the node
//   process, started without npx).
//
//   node bench.mjs MCP_URL TOKEN MCP_AUTH_BIN MCP_AUTH_HOME [ROUNDS] [CALLS]
//
// mcp-auth proxy takes its token from MCP_AUTH_HOME (logged in beforehand); mcp-remote gets
// the same token as an Authorization header, so neither runs an OAuth flow while timed.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [mcpUrl, token, bin, home, roundsArg, callsArg] = process.argv.slice(2);
const ROUNDS = Number(roundsArg ?? 10);
const CALLS = Number(callsArg ?? 300);
const mcpRemote = fileURLToPath(new URL('./node_modules/mcp-remote/dist/proxy.js', import.meta.url));

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const p99 = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]; };
const rssKiB = (pid) => {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) : NaN;
};

const contenders = {
  'mcp-auth proxy': () => ({ command: bin, args: ['proxy', mcpUrl, '--silent'], env: { ...process.env, MCP_AUTH_HOME: home } }),
  'mcp-remote 0.15.1': () => ({
    command: process.execPath,
    args: [mcpRemote, mcpUrl, '--header', `Authorization:Bearer ${token}`, '--allow-http', '--silent'],
    env: { ...process.env, HOME: `${home}/mcp-remote-home` },
  }),
};

async function timedCalls(client) {
  const times = [];
  for (let i = 0; i < CALLS; i++) {
    const t = process.hrtime.bigint();
    const r = await client.callTool({ name: 'echo', arguments: { text: `call ${i}` } });
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.content?.[0]?.text !== `call ${i}`) throw new Error(`bad answer ${JSON.stringify(r)}`);
  }
  return times;
}

// Direct: the same calls over streamable HTTP without a proxy.
const direct = new Client({ name: 'bench-direct', version: '1' });
await direct.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
}));
await timedCalls(direct); // warm-up
const directTimes = await timedCalls(direct);
await direct.close();

const results = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, spec] of Object.entries(contenders)) {
    const r = (results[name] ??= { start: [], call: [], rss: [] });
    const t0 = process.hrtime.bigint();
    const transport = new StdioClientTransport({ ...spec(), stderr: 'ignore' });
    const client = new Client({ name: 'bench', version: '1' });
    await client.connect(transport);
    const { tools } = await client.listTools();
    r.start.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (!tools.some((t) => t.name === 'echo')) throw new Error(`${name}: no echo tool`);
    if (round === 0 || round === ROUNDS - 1) {
      r.call.push(...(await timedCalls(client)));
      r.rss.push(rssKiB(transport.pid));
    }
    await client.close();
  }
}

const d50 = median(directTimes);
console.log(`direct streamable HTTP: echo p50 ${d50.toFixed(3)} ms, p99 ${p99(directTimes).toFixed(3)} ms (${CALLS} calls)`);
console.log('| proxy | start → first tools/list (median of ' + ROUNDS + ') | echo p50 | p99 | added per request (p50 − direct p50) | RSS |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const [name, r] of Object.entries(results)) {
  const c50 = median(r.call);
  console.log(`| ${name} | ${median(r.start).toFixed(1)} ms | ${c50.toFixed(3)} ms | ${p99(r.call).toFixed(3)} ms | ${(c50 - d50).toFixed(3)} ms | ${(Math.max(...r.rss) / 1024).toFixed(1)} MiB |`);
}
const a = results['mcp-auth proxy'], b = results['mcp-remote 0.15.1'];
console.log(`start: mcp-remote / mcp-auth = ${(median(b.start) / median(a.start)).toFixed(1)}×; memory: ${(Math.max(...b.rss) / Math.max(...a.rss)).toFixed(1)}×`);
