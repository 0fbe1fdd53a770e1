// Live resize (PATCH /sandboxes/{id}, `coppice sandbox resize`) with the real
// SDK running code in the sandbox: a process that cannot have more than the
// lower limit is OOM-killed at it and gets more once the limit is raised;
// info (getInfo) reports the new figures, also after a kill -9 restart of the
// gateway; a limit below what the sandbox holds is a 409 and changes
// nothing; a paused sandbox is resized too; another team's is missing.
// Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildDir, cgroupParentName, gatewaySkipReason, loadSdk, removeCgroupParents, removeStateDir, sdkName,
  startGateway, TEST_API_KEY,
} from './lib/harness.mjs';

const cliBin = path.join(buildDir, 'coppice');
// The memory held in the sandbox is a perl string (the sandboxes run the host's /usr).
const skip = gatewaySkipReason() || (fs.existsSync(cliBin) ? null : `missing ${cliBin}`) ||
  (fs.existsSync('/usr/bin/perl') ? null : 'no /usr/bin/perl to hold memory in the sandbox');
const opt = skip ? { skip } : {};
const OTHER_KEY = 'e2b_' + 'beef'.repeat(10);
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-resize-'));
let gw, Sandbox;

before(async () => {
  if (skip) return;
  ({ Sandbox } = await loadSdk());
  gw = await startGateway({ stateDir, apiKeys: `${TEST_API_KEY},other:${OTHER_KEY}` });
});
after(async () => {
  await gw?.stop();
  removeCgroupParents(stateDir);
  removeStateDir(stateDir);
});

async function patch(id, body, key = TEST_API_KEY) {
  const r = await fetch(`${gw.url}/sandboxes/${id}`, {
    method: 'PATCH',
    headers: { 'X-API-KEY': key, 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

// A perl that holds `mib` MiB of touched memory, then prints "held".
// (vec() grows the string in place and zero-fills it: ~`mib` MiB resident.)
const hold = (mib, then = '') => `perl -e '$|=1; $x = ""; vec($x, ${mib} * 1048576 - 1, 8) = 1; print "held\\n"; ${then}'`;

// The sandbox's cgroup files as the host sees them (v1 or v2).
function cgroupFile(id, v1ctrl, file) {
  const name = cgroupParentName(stateDir);
  for (const p of [`/sys/fs/cgroup/${v1ctrl}/${name}/${id}/${file}`, `/sys/fs/cgroup/${name}/${id}/${file}`]) {
    if (fs.existsSync(p)) return fs.readFileSync(p, 'utf8').trim();
  }
  return null;
}
const cpuQuota = (id) => cgroupFile(id, 'cpu', 'cpu.cfs_quota_us') ?? cgroupFile(id, 'cpu', 'cpu.max')?.split(' ')[0];
const memLimit = (id) => Number(cgroupFile(id, 'memory', 'memory.limit_in_bytes') ?? cgroupFile(id, 'memory', 'memory.max'));

function coppice(args) {
  const env = { PATH: process.env.PATH, COPPICE_API_URL: gw.url, COPPICE_API_KEY: TEST_API_KEY };
  return new Promise((resolve) => {
    execFile(cliBin, args, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

test(`[${sdkName}] a process is held to the lowered limit and gets more once it is raised; info follows`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    const id = sbx.sandboxId;
    let r = await patch(id, { memoryMB: 256, cpuCount: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.memoryMB, 256);
    assert.equal(memLimit(id), 256 * 1048576);
    let info = await sbx.getInfo();
    assert.equal(info.memoryMB, 256);
    assert.equal(info.cpuCount, 1);
    // 400 MiB does not fit in 256: the OOM killer ends that process (not envd).
    await assert.rejects(sbx.commands.run(hold(400), { timeoutMs: 60_000 }), (e) => {
      assert.ok(e.exitCode === 137 || /signal|killed/i.test(`${e.message} ${e.error ?? ''}`), `${e.exitCode} ${e.message}`);
      return true;
    });
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');

    r = await patch(id, { memoryMB: 1024, cpuCount: 2 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(cpuQuota(id), '200000');
    assert.equal(memLimit(id), 1024 * 1048576);
    // 600 MiB: more than the old 256 and than the template's 512.
    assert.equal((await sbx.commands.run(hold(600), { timeoutMs: 60_000 })).stdout, 'held\n');
    info = await sbx.getInfo();
    assert.equal(info.memoryMB, 1024);
    assert.equal(info.cpuCount, 2);
    const listed = (await Sandbox.list({ ...gw.opts }).nextItems()).find((s) => s.sandboxId === id);
    assert.equal(listed.memoryMB, 1024);
    assert.equal(listed.cpuCount, 2);

    // The CLI does the same.
    const cli = await coppice(['sandbox', 'resize', id, '--cpu', '1', '--memory', '768M']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /1 CPU, 768 MiB/);
    assert.equal(memLimit(id), 768 * 1048576);
    const bad = await coppice(['sandbox', 'resize', id, '--memory', '1.5G']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--memory wants a size/);
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] below what the sandbox holds is a 409 and nothing changes; bad input is a 400`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    const id = sbx.sandboxId;
    const bg = await sbx.commands.run(hold(300, 'sleep 600'), { background: true, timeoutMs: 0 });
    for (let i = 0; i < 200 && !bg.stdout.includes('held'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(bg.stdout, /held/);
    const before = memLimit(id);
    const r = await patch(id, { memoryMB: 128 });
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.match(r.body.message, /cannot go below/);
    assert.equal(memLimit(id), before);
    assert.ok((await sbx.commands.list()).some((p) => p.pid === bg.pid), 'the process that holds the memory lives');
    assert.equal((await sbx.getInfo()).memoryMB, before / 1048576);
    for (const body of ['{}', '{"cpuCount":0}', '{"memoryMB":"1G"}', '{"cpuCount":1,"disk":1}', '{"cpuCount":100000}', 'x']) {
      const b = await patch(id, body);
      assert.equal(b.status, 400, `${body}: ${JSON.stringify(b.body)}`);
      assert.ok(b.body.message.length > 0);
    }
    await bg.kill();
  } finally {
    await sbx.kill();
  }
});

test(`[${sdkName}] a paused sandbox is resized; another team's is missing; a restart keeps the figures`, opt, async () => {
  const sbx = await Sandbox.create({ ...gw.opts });
  const id = sbx.sandboxId;
  try {
    const paused = await fetch(`${gw.url}/sandboxes/${id}/pause`, { method: 'POST', headers: { 'X-API-KEY': TEST_API_KEY } });
    assert.equal(paused.status, 204);
    let r = await patch(id, { memoryMB: 640, cpuCount: 2 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.state, 'paused');
    // Paused to disk it has no cgroups: the figures apply at its resume.
    assert.equal(r.body.memoryMB, 640);
    r = await patch(id, { memoryMB: 900 }, OTHER_KEY);
    assert.equal(r.status, 404);

    await gw.kill9();
    gw = await startGateway({ stateDir, apiKeys: `${TEST_API_KEY},other:${OTHER_KEY}` });
    const again = await Sandbox.connect(id, gw.opts);  // resumes it
    const info = await again.getInfo();
    assert.equal(info.memoryMB, 640);
    assert.equal(info.cpuCount, 2);
    assert.equal(memLimit(id), 640 * 1048576, 'in force after the resume');
    assert.equal((await again.commands.run(hold(560), { timeoutMs: 60_000 })).stdout, 'held\n');
  } finally {
    await Sandbox.kill(id, gw.opts);
  }
});
