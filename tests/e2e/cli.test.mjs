// The `coppice` command-line client against a real gateway: templates,
// the sandbox lifecycle, and the errors a user sees (bad key, no key,
// gateway down, unknown sandbox). Needs root for the gateway.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, gatewaySkipReason, buildDir, freePort, TEST_API_KEY } from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
const skip = gatewaySkipReason() || (fs.existsSync(cliBin) ? null : `missing ${cliBin}`);
const opt = skip ? { skip } : {};
let gw;
const made = new Set();  // sandboxes this file created and has not seen killed
before(async () => {
  if (skip) return;
  gw = await startGateway();
});
after(async () => {
  for (const id of made) {
    try { await fetch(`${gw.url}/sandboxes/${id}`, { method: 'DELETE', headers: { 'X-API-KEY': TEST_API_KEY } }); } catch {}
  }
  await gw?.stop();
});

// Runs the CLI with only the environment given (none of the caller's
// COPPICE_* or E2B_* settings leak in). Resolves to { code, stdout, stderr }.
function coppice(args, env = {}) {
  const base = { PATH: process.env.PATH };
  return new Promise((resolve) => {
    execFile(cliBin, args, { env: { ...base, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
const asUser = () => ({ COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY });

test('template list shows base as a table and as JSON; template reload', opt, async () => {
  let r = await coppice(['template', 'list'], asUser());
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0], /^NAME\s+BACKEND\s+CPU\s+MEMORY\s+SIZE\s+SOURCE\s+BUILD$/);
  assert.ok(lines.some((l) => /^base\s+ns\s+1\s+512 MiB\s+\S+ \S+\s+host\s+[0-9a-f]{12}$/.test(l)), r.stdout);

  r = await coppice(['template', 'list', '--json'], asUser());
  assert.equal(r.code, 0, r.stderr);
  const list = JSON.parse(r.stdout);
  assert.ok(list.some((t) => t.templateID === 'base' && t.backend === 'ns' && t.sizeBytes > 0));

  r = await coppice(['template', 'reload'], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^base\s/m);
});

test('sandbox create, list, kill', opt, async () => {
  let r = await coppice(['sandbox', 'create', '--template', 'base', '--timeout', '120'], asUser());
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  assert.match(id, /^[a-z0-9]{20}$/);
  made.add(id);

  // The flags may also come after the subcommand, and the E2B variables work too.
  r = await coppice(['sandbox', 'list', '--api-url', gw.url], { E2B_API_KEY: TEST_API_KEY });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ID\s+TEMPLATE\s+STATE\s+STARTED\s+ENDS$/m);
  assert.match(r.stdout, new RegExp(`^${id}\\s+base\\s+running\\s`, 'm'));

  r = await coppice(['sandbox', 'list', '--json'], asUser());
  assert.equal(r.code, 0, r.stderr);
  const listed = JSON.parse(r.stdout).find((s) => s.sandboxID === id);
  assert.ok(listed);
  const left = (Date.parse(listed.endAt) - Date.now()) / 1000;
  assert.ok(left > 60 && left <= 121, `ends in ${left}s`);

  r = await coppice(['sandbox', 'kill', id], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), `killed ${id}`);
  made.delete(id);
  r = await coppice(['sandbox', 'list'], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(id));

  // Killing it again: the gateway's message, non-zero exit.
  r = await coppice(['sandbox', 'kill', id], asUser());
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`^coppice: .*${id}.*not found.*\\(HTTP 404\\)\\n$`));
});

test('sandbox create on an unknown template prints the gateway\'s message', opt, async () => {
  const r = await coppice(['sandbox', 'create', '--template', 'no-such-template'], asUser());
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^coppice: .*no-such-template.*base.*\(HTTP 400\)\n$/);
});

test('pool warm --wait, list, drain; bad counts and templates are the gateway\'s message', opt, async () => {
  let r = await coppice(['pool', 'warm', 'base', '2', '--wait'], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^TEMPLATE\s+TARGET\s+AVAILABLE\s+IN USE\s+FILLING\s+HITS\s+MISSES$/m);
  assert.match(r.stderr, /base: 2\/2 ready/);

  r = await coppice(['pool', 'list'], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^base\s+2\s+2\s+0\s+0\s+0\s+0$/m);
  r = await coppice(['pool', 'list', '--json'], asUser());
  assert.deepEqual(JSON.parse(r.stdout), [{ template: 'base', target: 2, available: 2, inUse: 0, filling: 0, hits: 0, misses: 0 }]);

  r = await coppice(['pool', 'warm', 'base', '-5'], asUser());
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /count must be between 0 and/);
  r = await coppice(['pool', 'warm', 'nope', '1'], asUser());
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /nope/);

  r = await coppice(['pool', 'drain', 'base'], asUser());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^base\s+0\s+0\s+0\s+0\s+0\s+0$/m);
});

test('a bad key, no key and an unreachable gateway are one-line errors', opt, async () => {
  let r = await coppice(['template', 'list'], { COPPICE_API_URL: gw.url, COPPICE_API_KEY: 'e2b_wrong' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /^coppice: invalid or missing API key.*\(HTTP 401\)\n$/);

  // --api-key wins over the environment.
  r = await coppice(['--api-key', 'e2b_wrong', 'sandbox', 'list'], asUser());
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /HTTP 401/);

  r = await coppice(['sandbox', 'list'], { COPPICE_API_URL: gw.url });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /^coppice: no API key: pass --api-key or set COPPICE_API_KEY.*\n$/);

  const closed = await freePort();
  r = await coppice(['template', 'list', '--api-url', `http://127.0.0.1:${closed}`], { COPPICE_API_KEY: TEST_API_KEY });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`^coppice: cannot reach the gateway at http://127\\.0\\.0\\.1:${closed}: .*refused.*\\n$`, 'i'));

  r = await coppice(['template', 'list', '--api-url', 'https://example.invalid'], { COPPICE_API_KEY: TEST_API_KEY });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /https is not supported/);
});
