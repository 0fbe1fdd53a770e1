// Warm pools: --pool at start, the /pools API, checkout (a pool hit is a
// sandbox like any other), refill, drain, drain on SIGTERM, and recovery of
// pool leftovers after kill -9. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, sleep, removeCgroupParents, removeStateDir } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const api = (gw) => async (method, p, body) => {
  const r = await fetch(`${gw.url}${p}`, {
    method,
    headers: { 'X-API-KEY': gw.opts.apiKey, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: r.status, json, text };
};

// Sandboxes with anything on this host: one state dir each, pooled ones included
// (dot entries, such as the trash that teardown empties, are not sandboxes).
const stateDirs = (stateDir) => {
  try {
    return fs.readdirSync(path.join(stateDir, 'sandboxes')).filter((n) => !n.startsWith('.')).sort();
  } catch { return []; }
};

async function waitFor(what, fn, ms = 20_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const poolOf = async (call, t) => (await call('GET', '/pools')).json.find((p) => p.template === t);

const metric = async (gw, name, labels) => {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + (labels ? '{' : ' ')) && !(labels === undefined && line.startsWith(name + '{'))) continue;
    if (labels && !line.startsWith(`${name}{${labels}}`)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
};

test(`[${sdkName}] --pool fills at start; a create takes a warm sandbox that is like a cold one; the pool refills`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await startGateway({ extraArgs: ['--pool', 'base=2'] });
  cleanups.push(gw.stop);
  const call = api(gw);
  const full = await waitFor('pool of 2', async () => { const p = await poolOf(call, 'base'); return p?.available === 2 && p; });
  assert.equal(full.target, 2);
  assert.equal(full.inUse, 0);
  assert.deepEqual([full.hits, full.misses], [0, 0]);
  const pooledIds = stateDirs(gw.stateDir);
  assert.equal(pooledIds.length, 2, 'two sandboxes exist, invisible');
  assert.deepEqual((await call('GET', '/v2/sandboxes')).json, [], 'pooled sandboxes are not listed');
  assert.equal(await metric(gw, 'coppice_pool_available', 'template="base"'), 2);

  const a = await Sandbox.create({ ...gw.opts, envs: { POOLED: 'yes-a' }, metadata: { who: 'a' } });
  const b = await Sandbox.create({ ...gw.opts, envs: { POOLED: 'yes-b' }, metadata: { who: 'b' } });
  assert.ok(pooledIds.includes(a.sandboxId) && pooledIds.includes(b.sandboxId), 'both creates were pool hits');
  assert.notEqual(a.sandboxId, b.sandboxId);
  assert.match(a.sandboxId, /^[a-z0-9]{20}$/);
  // Its own id (hostname), env vars, metadata, token, a clean writable layer.
  assert.equal((await a.commands.run('hostname')).stdout.trim(), a.sandboxId);
  // Made at background priority, but what runs in it is at normal priority:
  // nice 0 and SCHED_OTHER (fields 19 and 41 of /proc/self/stat).
  const stat = (await a.commands.run('cat /proc/self/stat')).stdout;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.equal(fields[19 - 3], '0', `nice: ${stat}`);
  assert.equal(fields[41 - 3], '0', `policy: ${stat}`);
  assert.equal((await a.commands.run('echo $POOLED')).stdout, 'yes-a\n');
  assert.equal((await b.commands.run('echo $POOLED')).stdout, 'yes-b\n');
  assert.equal((await a.getInfo()).metadata.who, 'a');
  await a.files.write('/home/user/only-a.txt', 'a');
  assert.equal(await b.files.exists('/home/user/only-a.txt'), false);
  assert.equal((await b.commands.run('ls -A /tmp | wc -l')).stdout.trim(), '0');
  assert.equal((await b.commands.run('ls -A /.coppice/run', { user: 'root' })).stdout, 'envd.sock\n');
  // The token is enforced: a request without it is refused.
  const r = await fetch(`${gw.url}/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': a.sandboxId, 'E2b-Sandbox-Port': '49983' } });
  assert.equal(r.status, 401);

  assert.equal(await metric(gw, 'coppice_checkouts_total'), 2);
  assert.ok((await metric(gw, 'coppice_checkout_ns_sum')) > 0);
  assert.equal(await metric(gw, 'coppice_create_seconds_count', 'pool="hit"'), 2);
  const refilled = await waitFor('refill', async () => { const p = await poolOf(call, 'base'); return p.available === 2 && p; });
  assert.equal(refilled.inUse, 2);
  assert.deepEqual([refilled.hits, refilled.misses], [2, 0], 'two creates, two pool hits');
  assert.equal(await metric(gw, 'coppice_pool_in_use', 'template="base"'), 2);
  await a.kill();
  await waitFor('inUse 1', async () => (await poolOf(call, 'base')).inUse === 1);
});

test(`[${sdkName}] /pools API: warm, drain, bad input; an empty pool falls back to the cold path`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const gw = await startGateway();
  cleanups.push(gw.stop);
  const call = api(gw);
  assert.deepEqual((await call('GET', '/pools')).json, []);
  for (const [body, want] of [[{}, 400], [{ count: -1 }, 400], [{ count: 'x' }, 400], [{ count: 1e6 }, 400]]) {
    const res = await call('POST', '/pools/base/warm', body);
    assert.equal(res.status, want, JSON.stringify(body));
    assert.equal(res.json.code, want);
    assert.ok(res.json.message.length > 0);
  }
  const unknown = await call('POST', '/pools/no-such-template/warm', { count: 1 });
  assert.equal(unknown.status, 400);
  assert.match(unknown.json.message, /base/, 'names the templates that exist');
  assert.equal((await call('POST', '/pools/no-such-template/drain')).status, 400);
  assert.equal((await call('GET', '/pools/base/warm')).status, 404);
  const bad = await fetch(`${gw.url}/pools`, { headers: { 'X-API-KEY': 'wrong' } });
  assert.equal(bad.status, 401);

  // Cold create with no pool: a miss. envd got its token and envVars from a
  // file at start, which it removed; the token is enforced.
  const cold = await Sandbox.create({ ...gw.opts, envs: { COLD: 'yes' } });
  assert.equal(await metric(gw, 'coppice_create_seconds_count', 'pool="miss"'), 1);
  assert.equal((await cold.commands.run('echo $COLD')).stdout, 'yes\n');
  assert.equal((await cold.commands.run('ls -A /.coppice/run', { user: 'root' })).stdout, 'envd.sock\n');
  const noToken = await fetch(`${gw.url}/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': cold.sandboxId, 'E2b-Sandbox-Port': '49983' } });
  assert.equal(noToken.status, 401);

  const warm = await call('POST', '/pools/base/warm', { count: 3 });
  assert.equal(warm.status, 200);
  assert.equal(warm.json.template, 'base');
  assert.equal(warm.json.target, 3);
  await waitFor('pool of 3', async () => (await poolOf(call, 'base')).available === 3);
  assert.equal(stateDirs(gw.stateDir).length, 4);

  const drained = await call('POST', '/pools/base/drain');
  assert.equal(drained.status, 200);
  assert.equal(drained.json.target, 0);
  assert.equal(drained.json.available, 0);
  assert.deepEqual(stateDirs(gw.stateDir), [cold.sandboxId], 'only the user sandbox is left');
  assert.equal((await cold.commands.run('echo still')).stdout, 'still\n');
  // A create after the drain is cold again.
  const again = await Sandbox.create(gw.opts);
  assert.equal(await metric(gw, 'coppice_create_seconds_count', 'pool="miss"'), 2);
  await again.kill();
  await cold.kill();
});

test(`[${sdkName}] SIGTERM drains the pools and keeps user sandboxes; kill -9 leftovers are reconciled on start`, opt, async () => {
  const { Sandbox } = await loadSdk();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-pools-'));
  let gw = await startGateway({ stateDir, extraArgs: ['--pool', 'base=2'] });
  cleanups.push(async () => {
    await gw.stop();
    removeCgroupParents(stateDir);
    removeStateDir(stateDir);
  });
  const call1 = api(gw);
  await waitFor('pool of 2', async () => (await poolOf(call1, 'base'))?.available === 2);
  const user = await Sandbox.create(gw.opts);
  await waitFor('refill', async () => (await poolOf(call1, 'base')).available === 2);
  assert.equal(stateDirs(stateDir).length, 3);

  // SIGTERM: the pool is drained before exit, the user sandbox lives on.
  gw.proc.kill('SIGTERM');
  await new Promise((r) => (gw.proc.exitCode !== null ? r() : gw.proc.on('exit', r)));
  assert.deepEqual(stateDirs(stateDir), [user.sandboxId]);

  gw = await startGateway({ stateDir, extraArgs: ['--pool', 'base=2'] });
  const call2 = api(gw);
  await waitFor('pool of 2 again', async () => (await poolOf(call2, 'base'))?.available === 2);
  const pooledBefore = stateDirs(stateDir).filter((id) => id !== user.sandboxId);
  assert.equal(pooledBefore.length, 2);

  // kill -9: the pooled sandboxes are left behind; the next start removes
  // them like any orphan and fills the pool with new ones.
  await gw.kill9();
  gw = await startGateway({ stateDir, extraArgs: ['--pool', 'base=1'] });
  const call3 = api(gw);
  await waitFor('pool of 1', async () => (await poolOf(call3, 'base'))?.available === 1);
  const now = stateDirs(stateDir);
  for (const id of pooledBefore) {
    assert.ok(!now.includes(id), `pool leftover ${id} removed`);
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(id), `no mount of ${id}`);
  }
  assert.equal(now.length, 2);
  const u2 = await Sandbox.connect(user.sandboxId, gw.opts);
  assert.equal((await u2.commands.run('echo adopted')).stdout, 'adopted\n');
  await u2.kill();
});
