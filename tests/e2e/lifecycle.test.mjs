// E2B's lifecycle options through the real SDK: what the gateway can honour
// (kill on timeout, no auto-resume) is accepted and reported by getInfo in
// E2B's shape, also after a kill -9 restart; pausing on timeout (which needs
// pause to disk) is refused with a 400 that says so; combinations E2B refuses
// and bad types are 400s naming the field. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gatewaySkipReason, loadSdk, removeCgroupParents, removeStateDir, sdkName, startGateway, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-lifecycle-'));
let gw, Sandbox;

before(async () => {
  if (skip) return;
  ({ Sandbox } = await loadSdk());
  gw = await startGateway({ stateDir });
});
after(async () => {
  await gw?.stop();
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});

const KILL = { onTimeout: 'kill', autoResume: false };

test(`[${sdkName}] onTimeout kill and autoResume false are accepted and reported, across a restart`, opt, async () => {
  const asked = await Sandbox.create({ ...gw.opts, lifecycle: { onTimeout: 'kill', autoResume: false } });
  const plain = await Sandbox.create({ ...gw.opts });
  const objectForm = await Sandbox.create({ ...gw.opts, lifecycle: { onTimeout: { action: 'kill' } } });
  try {
    for (const s of [asked, plain, objectForm]) assert.deepEqual((await s.getInfo()).lifecycle, KILL);
    await gw.kill9();
    gw = await startGateway({ stateDir });
    assert.deepEqual((await Sandbox.getInfo(asked.sandboxId, gw.opts)).lifecycle, KILL);
  } finally {
    for (const s of [asked, plain, objectForm]) await Sandbox.kill(s.sandboxId, gw.opts);
  }
});

test(`[${sdkName}] pause on timeout with memory (and autoResume) and files only are taken and reported`, opt, async () => {
  // With memory (pause_memory.test.mjs sees it happen).
  for (const [lifecycle, want] of [[{ onTimeout: 'pause' }, { onTimeout: 'pause', autoResume: false }],
    [{ onTimeout: 'pause', autoResume: true }, { onTimeout: 'pause', autoResume: true }]]) {
    const s = await Sandbox.create({ ...gw.opts, lifecycle });
    assert.deepEqual((await s.getInfo()).lifecycle, want, JSON.stringify(lifecycle));
    await s.kill();
  }
  // Files only (pause to disk at the timeout; pause.test.mjs sees it happen).
  const r = await fetch(`${gw.url}/sandboxes`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ templateID: 'base', autoPause: true, autoPauseMemory: false }) });
  assert.equal(r.status, 201);
  const id = (await r.json()).sandboxID;
  const info = await (await fetch(`${gw.url}/sandboxes/${id}`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
  assert.deepEqual(info.lifecycle, { onTimeout: 'pause', autoResume: false });
  await Sandbox.kill(id, gw.opts);
});

test(`[${sdkName}] raw bodies: what E2B refuses and bad types are 400s naming the field`, opt, async () => {
  const post = async (p, body) => {
    const r = await fetch(`${gw.url}${p}`, {
      method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: r.status, body: await r.json() };
  };
  const cases = [
    [{ autoPause: true, autoPauseMemory: false, autoResume: { enabled: true } }, /autoPauseMemory: false/],
    [{ autoResume: { enabled: true } }, /autoPause: true/],
    [{ autoPauseMemory: false }, /autoPause: true/],
    [{ autoPause: 'no' }, /autoPause must be a boolean/],
    [{ autoResume: { enabled: 'yes' } }, /autoResume.enabled must be a boolean/],
    [{ lifecycle: { onTimeout: 'sleep' } }, /lifecycle.onTimeout must be "kill" or "pause"/],
  ];
  for (const p of ['/v2/sandboxes', '/sandboxes']) {
    for (const [body, says] of cases) {
      const r = await post(p, { templateID: 'base', ...body });
      assert.equal(r.status, 400, `${p} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.message, says);
    }
  }
  // The v1 body of SDK 2.45 with the options it sends for kill.
  const ok = await post('/sandboxes', { templateID: 'base', secure: true, allow_internet_access: true, autoPause: false,
    autoResume: { enabled: false } });
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
  const info = await Sandbox.getInfo(ok.body.sandboxID, gw.opts);
  assert.deepEqual(info.lifecycle, KILL);
  await Sandbox.kill(ok.body.sandboxID, gw.opts);
});
