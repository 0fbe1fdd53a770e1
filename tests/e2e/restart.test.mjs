// A gateway killed with SIGKILL and started again loses nothing: running
// sandboxes are listed and usable, their files are there; expired ones are
// reaped. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { keptStateDir, startGateway, gatewaySkipReason, loadSdk, sdkName, sleep } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
let gw;
const stateDir = keptStateDir('restart', after, () => gw);

test(`[${sdkName}] kill -9 the gateway mid-life, start it again: every sandbox and file is there`, opt, async () => {
  const { Sandbox } = await loadSdk();
  gw = await startGateway({ stateDir });
  const a = await Sandbox.create({ ...gw.opts, metadata: { who: 'a' } });
  const b = await Sandbox.create({ ...gw.opts, metadata: { who: 'b' } });
  const short = await Sandbox.create({ ...gw.opts, timeoutMs: 2_000 });
  await a.files.write('/home/user/keep.txt', 'survives');
  const bg = await b.commands.run('sleep 600', { background: true, timeoutMs: 0 });
  const shortInit = (await fetch(`${gw.url}/sandboxes/${short.sandboxId}`, { headers: { 'X-API-KEY': gw.opts.apiKey } })).ok;
  assert.ok(shortInit);

  await gw.kill9();
  await sleep(2_500); // `short` expires while the gateway is down
  gw = await startGateway({ stateDir });

  const listed = (await Sandbox.list({ ...gw.opts }).nextItems()).map((s) => s.sandboxId).sort();
  assert.deepEqual(listed, [a.sandboxId, b.sandboxId].sort());
  const a2 = await Sandbox.connect(a.sandboxId, gw.opts);
  assert.equal(await a2.files.read('/home/user/keep.txt'), 'survives');
  assert.equal((await a2.commands.run('echo alive')).stdout, 'alive\n');
  const b2 = await Sandbox.connect(b.sandboxId, gw.opts);
  const procs = await b2.commands.list();
  assert.ok(procs.some((p) => p.pid === bg.pid), 'the background process still runs');
  assert.equal((await b2.getInfo()).metadata.who, 'b');
  // The expired one is gone, kernel leftovers included.
  assert.equal(await Sandbox.kill(short.sandboxId, gw.opts), false);
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(!mounts.includes(short.sandboxId), 'no mount of the expired sandbox');
});
