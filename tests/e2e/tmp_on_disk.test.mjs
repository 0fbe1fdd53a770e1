// /tmp is on the sandbox's writable layer (disk), as on E2B, not a tmpfs
// charged to its memory limit: a file larger than the memory limit can be
// written there. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGateway, gatewaySkipReason, loadSdk, sdkName, cgroupParentName } from './lib/harness.mjs';

const MiB = 1 << 20;
const fileMiB = 600;
let skip = gatewaySkipReason();
let gw;
before(async () => {
  if (skip) return;
  // The sandboxes' image (sparse) must hold the file: bigger than the tests' default.
  gw = await startGateway({ extraArgs: ['--disk-image-size', '2G'] });
  // The file goes to the state dir's file system (through the image); leave it room to spare.
  const st = fs.statfsSync(gw.stateDir);
  const free = st.bavail * st.bsize;
  if (free < (fileMiB + 512) * MiB) skip = `the state dir's file system has ${Math.floor(free / MiB)} MiB free, ${fileMiB + 512} needed`;
});
after(async () => { await gw?.stop(); });

// The memory limit of sandbox `id` in force on the host, in bytes.
function memoryLimit(id) {
  const parent = cgroupParentName(gw.stateDir);
  for (const f of [`/sys/fs/cgroup/memory/${parent}/${id}/memory.limit_in_bytes`, `/sys/fs/cgroup/${parent}/${id}/memory.max`]) {
    try { return Number(fs.readFileSync(f, 'utf8').trim()); } catch {}
  }
  return NaN;
}

test(`[${sdkName}] writing ${fileMiB} MB to /tmp in a sandbox limited to 512 MB succeeds; the data is on disk`, async (t) => {
  if (skip) { t.skip(skip); return; }
  const { Sandbox } = await loadSdk();
  const sbx = await Sandbox.create({ ...gw.opts });
  try {
    assert.equal(memoryLimit(sbx.sandboxId), 512 * MiB, 'the base template limits memory to 512 MB');
    const where = await sbx.commands.run('stat -f -c %T /tmp; stat -c %a /tmp; ls -A /tmp | wc -l');
    assert.deepEqual(where.stdout.trim().split('\n'), ['overlayfs', '1777', '0'], 'the template\'s empty /tmp, on the overlay');

    const r = await sbx.commands.run(`dd if=/dev/zero of=/tmp/big bs=1M count=${fileMiB} status=none && stat -c %s /tmp/big`,
      { timeoutMs: 300_000 }).catch((e) => e);
    assert.equal(r.exitCode, 0, `dd: ${r.message ?? ''} ${r.error ?? ''} ${r.stderr ?? ''}`);
    assert.equal(r.stdout.trim(), String(fileMiB * MiB));
    // It is in the sandbox's writable layer on the host, owned by the host
    // uid of the sandbox's user (1000 inside).
    const upper = path.join(gw.stateDir, 'sandboxes', sbx.sandboxId, 'upper', 'tmp', 'big');
    const hostRoot = Number((await sbx.commands.run('cat /proc/self/uid_map')).stdout.trim().split(/\s+/)[1]);
    const st = fs.statSync(upper);
    assert.equal(st.size, fileMiB * MiB);
    assert.equal(st.uid, hostRoot + 1000);
    // The writer was not killed and the sandbox goes on.
    assert.equal((await sbx.commands.run('rm /tmp/big && echo ok')).stdout, 'ok\n');
  } finally {
    await sbx.kill();
  }
});
