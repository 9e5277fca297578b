// The official TypeScript MCP SDK's stdio client (@modelcontextprotocol/sdk) spawns
// `mcp-auth proxy MCP_URL`, exactly as Claude Desktop or another stdio-only host would, and
// uses the remote OAuth-protected server through it: the proxy logs in on the first 401
// (curl plays the browser; the server auto-approves), then the client lists tools, calls
// one, and receives a server notification.
//
//   node proxy.mjs MCP_URL MCP_AUTH_BIN HOME_DIR
//
// Exit status 0 on success, 1 with a message naming the failing step.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const [mcpUrl, bin, home] = process.argv.slice(2);
if (!mcpUrl || !bin || !home) {
  console.error('usage: node proxy.mjs MCP_URL MCP_AUTH_BIN HOME_DIR');
  process.exit(2);
}

let step = 'spawning the proxy';
try {
  const transport = new StdioClientTransport({
    command: bin,
    args: ['proxy', mcpUrl, '--browser', 'curl -sfL -o /dev/null'],
    env: { ...process.env, MCP_AUTH_HOME: home },
    stderr: 'inherit',
  });
  const client = new Client({ name: 'ts-sdk-over-mcp-auth-proxy', version: '1.0.0' });
  const logs = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { logs.push(n.params); });

  step = 'connect (initialize through the proxy, OAuth login on the 401)';
  await client.connect(transport);

  step = 'tools/list';
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  if (!names.includes('echo') || !names.includes('whoami') || !names.includes('notify')) {
    throw new Error(`unexpected tools: ${names.join(', ')}`);
  }

  step = 'tools/call whoami';
  const who = await client.callTool({ name: 'whoami', arguments: {} });
  const claims = JSON.parse(who.content[0].text);
  if (!claims.subject || !claims.client_id) throw new Error(`whoami: ${who.content[0].text}`);

  step = 'tools/call notify (a server notification on the request stream)';
  const sent = await client.callTool({ name: 'notify', arguments: { text: 'hello over stdio' } });
  if (sent.content[0].text !== 'sent') throw new Error(`notify: ${JSON.stringify(sent)}`);
  if (!logs.some((l) => l.data === 'hello over stdio')) {
    throw new Error(`no notifications/message reached the client (got ${JSON.stringify(logs)})`);
  }

  step = 'close';
  await client.close();
  console.log(`ts-sdk over mcp-auth proxy: ok (tools: ${names.join(', ')}; subject ${claims.subject})`);
} catch (e) {
  console.error(`ts-sdk over mcp-auth proxy: FAILED at ${step}: ${e?.stack ?? e}`);
  process.exit(1);
}
