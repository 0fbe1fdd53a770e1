// Teams: two teams from COPPICE_API_KEYS and one made through the admin API.
// A team sees, reaches and changes only its own sandboxes; another team's
// sandbox looks exactly like one that does not exist. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, buildDir, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const KEY_A = 'e2b_' + 'a1'.repeat(20);
const KEY_B = 'e2b_' + 'b2'.repeat(20);
let gw, sdk, sbxA;
const made = [];  // [id, key]: killed at the end whatever happens

before(async () => {
  if (skip) return;
  gw = await startGateway({ apiKeys: `${TEST_API_KEY},team-a:${KEY_A},team-b:${KEY_B}` });
  sdk = await loadSdk();
  sbxA = await sdk.Sandbox.create({ ...as(KEY_A) });
  made.push([sbxA.sandboxId, KEY_A]);
});
after(async () => {
  if (!gw) return;
  for (const [id, key] of made) {
    try { await fetch(`${gw.url}/sandboxes/${id}`, { method: 'DELETE', headers: { 'X-API-KEY': key } }); } catch {}
  }
  await gw.stop();
});

const as = (apiKey) => ({ ...gw.opts, apiKey });
const api = (key, p, init = {}) => fetch(`${gw.url}${p}`, {
  ...init, headers: { 'X-API-KEY': key, 'content-type': 'application/json', ...(init.headers || {}) },
});
const listIds = async (key) => (await sdk.Sandbox.list({ ...as(key) }).nextItems()).map((s) => s.sandboxId);
const isNotFound = (e) => e instanceof sdk.NotFoundError;

test(`[${sdkName}] team B cannot list, get, connect to, kill or run commands in team A's sandbox`, opt, async () => {
  const id = sbxA.sandboxId;
  assert.ok(!(await listIds(KEY_B)).includes(id), 'not in B\'s list');
  await assert.rejects(sdk.Sandbox.getInfo(id, { ...as(KEY_B) }), isNotFound);
  await assert.rejects(sdk.Sandbox.connect(id, { ...as(KEY_B) }), isNotFound);
  assert.equal(await sdk.Sandbox.kill(id, { ...as(KEY_B) }), false, 'a kill of a missing sandbox');
  await assert.rejects(sdk.Sandbox.setTimeout(id, 60_000, { ...as(KEY_B) }), isNotFound);
  // The data plane with B's key: as for a sandbox that does not exist.
  const start = (key, sbx) => fetch(`${gw.url}/process.Process/Start`, {
    method: 'POST',
    headers: { 'X-API-KEY': key, 'E2b-Sandbox-Id': sbx, 'E2b-Sandbox-Port': '49983', 'content-type': 'application/json' },
    body: JSON.stringify({ process: { cmd: '/bin/true' } }),
  });
  const theirs = await start(KEY_B, id);
  const missing = await start(KEY_B, 'z'.repeat(20));
  assert.equal(theirs.status, missing.status);
  assert.equal((await theirs.json()).message, (await missing.json()).message);
  assert.equal((await start('e2b_' + '9'.repeat(40), id)).status, 401, 'an invalid key is refused');
  // The sandbox was not touched.
  const r = await sbxA.commands.run('echo still here');
  assert.equal(r.stdout.trim(), 'still here');
});

test(`[${sdkName}] team A lists, gets, connects to, runs commands in and kills its sandbox`, opt, async () => {
  const own = await sdk.Sandbox.create({ ...as(KEY_A) });
  made.push([own.sandboxId, KEY_A]);
  assert.ok((await listIds(KEY_A)).includes(own.sandboxId));
  assert.equal((await sdk.Sandbox.getInfo(own.sandboxId, { ...as(KEY_A) })).sandboxId, own.sandboxId);
  const again = await sdk.Sandbox.connect(own.sandboxId, { ...as(KEY_A) });
  assert.equal((await again.commands.run('echo hi')).stdout.trim(), 'hi');
  assert.equal(await sdk.Sandbox.kill(own.sandboxId, { ...as(KEY_A) }), true);
  assert.ok(!(await listIds(KEY_A)).includes(own.sandboxId));
});

test(`[${sdkName}] an admin makes a team and a key; the key works for that team only`, opt, async () => {
  assert.equal((await api(KEY_A, '/admin/teams')).status, 403, 'not for a team key');
  const team = await api(TEST_API_KEY, '/admin/teams', { method: 'POST', body: JSON.stringify({ name: 'team-c' }) });
  assert.equal(team.status, 201, await team.clone().text());
  const k = await api(TEST_API_KEY, '/admin/teams/team-c/keys', { method: 'POST', body: JSON.stringify({ name: 'ci' }) });
  assert.equal(k.status, 201);
  const { key } = await k.json();
  const sbx = await sdk.Sandbox.create({ ...as(key) });
  made.push([sbx.sandboxId, key]);
  assert.equal((await sbx.commands.run('echo team c')).stdout.trim(), 'team c');
  assert.deepEqual(await listIds(key), [sbx.sandboxId]);
  assert.ok(!(await listIds(KEY_A)).includes(sbx.sandboxId));
  await assert.rejects(sdk.Sandbox.getInfo(sbx.sandboxId, { ...as(KEY_A) }), isNotFound);
  assert.equal(await sdk.Sandbox.kill(sbx.sandboxId, { ...as(key) }), true);
  assert.equal((await api(TEST_API_KEY, '/admin/teams/team-c', { method: 'DELETE' })).status, 204);
  assert.equal((await api(key, '/v2/sandboxes')).status, 401, 'the team\'s keys went with it');
});

// The CLI over the same endpoints, with only the environment given.
const coppice = (args, key) => new Promise((resolve) => {
  execFile(path.join(buildDir, 'coppice'), args,
    { env: { PATH: process.env.PATH, COPPICE_API_URL: gw.url, COPPICE_API_KEY: key }, timeout: 60_000 },
    (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
});

test(`[${sdkName}] coppice team and key commands`, opt, async () => {
  let r = await coppice(['team', 'create', 'team-d'], TEST_API_KEY);
  assert.equal(r.code, 0, r.stderr);
  r = await coppice(['key', 'create', 'ci', '--team', 'team-d'], TEST_API_KEY);
  assert.equal(r.code, 0, r.stderr);
  const key = r.stdout.trim();
  assert.match(key, /^e2b_[0-9a-f]{40}$/);
  r = await coppice(['key', 'list', '--json'], key);
  assert.equal(r.code, 0, r.stderr);
  const [own] = JSON.parse(r.stdout);
  assert.equal(own.team, 'team-d');
  assert.ok(!r.stdout.includes(key.slice(4)), 'the key is never listed');
  r = await coppice(['team', 'list'], key);
  assert.notEqual(r.code, 0, 'not an admin key');
  assert.match(r.stderr, /not an admin key/);
  r = await coppice(['key', 'delete', own.id], key);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await api(key, '/v2/sandboxes')).status, 401);
  r = await coppice(['team', 'delete', 'team-d'], TEST_API_KEY);
  assert.equal(r.code, 0, r.stderr);
  r = await coppice(['team', 'list'], TEST_API_KEY);
  assert.ok(!r.stdout.includes('team-d'));
});
