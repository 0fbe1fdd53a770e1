// A host that cannot give sandboxes a network (here: an uplink that does not
// exist, refused before the gateway touches anything): --network auto runs
// loopback-only sandboxes and says why, a create that asks for internet gets
// a 400 with that reason, and --network on refuses to start. Needs root.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, gatewaySkipReason, gatewayBin, freePort, loadSdk, sdkName, removeCgroupParents,
  removeStateDir, uidRangeEntry, TEST_API_KEY } from './lib/harness.mjs';

const skip = gatewaySkipReason();
const opt = skip ? { skip } : {};
const { Sandbox } = skip ? {} : await loadSdk();
const missing = 'cpt-nouplink0';
const cleanup = [];
after(async () => {
  for (const c of cleanup.reverse()) await c();
});

test(`[${sdkName}] --network auto on a host that cannot: loopback-only sandboxes, and a create asking for internet is told why`, opt, async () => {
  const g = await startGateway({ extraArgs: ['--network', 'auto', '--uplink', missing] });
  cleanup.push(() => g.stop());
  const sbx = await Sandbox.create('base', g.opts);
  const links = await sbx.commands.run('ls /sys/class/net');
  assert.deepEqual(links.stdout.trim().split(/\s+/), ['lo'], 'loopback only');
  const info = await (await fetch(`${g.url}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-KEY': TEST_API_KEY } })).json();
  assert.equal(info.allowInternetAccess, true, 'E2B shape kept');
  await sbx.kill();
  for (const body of [{ templateID: 'base', allow_internet_access: true }, { templateID: 'base', network: { allowOut: ['1.2.3.4'] } }]) {
    const r = await fetch(`${g.url}/v2/sandboxes`, {
      method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY, 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const j = await r.json();
    assert.equal(r.status, 400, JSON.stringify(j));
    assert.match(j.message, /without a network/);
    assert.match(j.message, new RegExp(missing), 'the reason names what is missing');
  }
  // Nothing of the network was made on the host.
  assert.ok(!fs.existsSync(`/sys/class/net/${missing}`));
});

test('--network on refuses to start on a host that cannot, in one line', opt, async () => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-netoff-'));
  cleanup.push(() => {
    fs.rmSync(uidRangeEntry(stateDir).file, { force: true });
    removeCgroupParents(stateDir);
    removeStateDir(stateDir);
  });
  const port = await freePort();
  const proc = spawn(gatewayBin, ['--listen', `127.0.0.1:${port}`, '--state-dir', stateDir, '--network', 'on',
    '--uplink', missing, '--disk-image-size', '512M', '--uid-slots', '16'],
  { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COPPICE_API_KEYS: TEST_API_KEY } });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const code = await new Promise((r) => proc.on('exit', r));
  assert.notEqual(code, 0);
  const lines = err.split('\n').filter((l) => /ERROR/.test(l));
  assert.equal(lines.length, 1, err);
  assert.match(lines[0], new RegExp(`uplink ${missing}: no such interface`));
  assert.match(lines[0], /--network off/);
});
