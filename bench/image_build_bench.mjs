// Template builds from an OCI image and from a Dockerfile, with a cold and a
// warm layer cache, and the disk two templates of one base take. Makes its
// own two-layer image (busybox from the test packages + the host's Python
// standard library, ~60 MiB), serves it from a docker-registry on loopback
// and builds into temp template roots (no gateway needed). As root, after
// ./scripts/build.sh:
//   node bench/image_build_bench.mjs [--n 3]
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const n = Number(process.argv[process.argv.indexOf('--n') + 1]) || 3;
const buildDir = process.env.COPPICE_BUILD_DIR || path.resolve(import.meta.dirname, '../build');
const cli = path.join(buildDir, 'coppice');
const debs = process.env.COPPICE_TEST_DEBS || '/var/cache/coppice/test-debs';
const deb = fs.readdirSync(debs).find((f) => f.startsWith('busybox-static_'));
const stdlib = fs.readdirSync('/usr/lib').filter((d) => /^python3\.\d+$/.test(d)).map((d) => `/usr/lib/${d}`)[0];
if (!deb || !stdlib) throw new Error('needs busybox-static in the test packages and a python3 standard library');

const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'coppice-image-bench-'));
let registry;
try {
  const rootfs = path.join(work, 'rootfs');
  sh('dpkg-deb', ['-x', path.join(debs, deb), rootfs]);
  fs.symlinkSync('busybox', path.join(rootfs, 'bin', 'sh'));
  fs.mkdirSync(path.join(rootfs, 'tmp'), { mode: 0o1777 });
  const layout = path.join(work, 'layout');
  sh('umoci', ['init', '--layout', layout]);
  sh('umoci', ['new', '--image', `${layout}:1`]);
  sh('umoci', ['insert', '--image', `${layout}:1`, rootfs, '/']);
  sh('umoci', ['insert', '--image', `${layout}:1`, stdlib, stdlib]);
  sh('umoci', ['config', '--image', `${layout}:1`, '--config.env', 'PATH=/bin:/usr/bin', '--config.cmd', '/bin/sh']);

  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  const cfg = path.join(work, 'registry.yml');
  fs.writeFileSync(cfg, `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/registry\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  registry = spawn('docker-registry', ['serve', cfg], { stdio: 'ignore' });
  for (let i = 0; ; i++) {
    try { if ((await fetch(`http://127.0.0.1:${port}/v2/`)).ok) break; } catch {}
    if (i > 300) throw new Error('docker-registry did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const ref = `127.0.0.1:${port}/bench:1`;
  sh('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:1`, `docker://${ref}`]);
  const ctx = path.join(work, 'ctx');
  fs.mkdirSync(ctx);
  fs.writeFileSync(path.join(ctx, 'app.txt'), 'app\n');
  fs.writeFileSync(path.join(ctx, 'Dockerfile'),
    `FROM ${ref}\nENV MODE=bench\nWORKDIR /opt/app\nCOPY app.txt ./\nRUN echo built > built.txt\nCMD ["/bin/sh"]\n`);

  const env = { PATH: process.env.PATH, COPPICE_API_URL: 'http://127.0.0.1:1', COPPICE_API_KEY: 'e2b_none' };
  const build = (root, name, args) => {
    const t0 = performance.now();
    execFileSync(cli, ['template', 'build', '--templates', root, '--name', name, ...args], { env, stdio: 'ignore' });
    return performance.now() - t0;
  };
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const fresh = () => fs.mkdtempSync(path.join(work, 'root-'));
  const rows = [];
  const measure = (what, f) => {
    const xs = Array.from({ length: n }, (_, i) => f(i));
    rows.push([what, median(xs)]);
    console.log(JSON.stringify({ bench: 'image_build', what, n, median_ms: +median(xs).toFixed(1), runs_ms: xs.map((x) => +x.toFixed(1)) }));
  };
  const image = ['--image', ref];
  const dockerfile = ['--dockerfile', path.join(ctx, 'Dockerfile')];
  measure('from an image, cold cache (fetch, unpack, link)', () => build(fresh(), 'a', image));
  const warmRoot = fresh();
  build(warmRoot, 'seed', image);
  measure('from an image, warm cache (another template of it)', (i) => build(warmRoot, `w${i}`, image));
  measure('from a Dockerfile (COPY, RUN), cold cache', () => build(fresh(), 'd', dockerfile));
  measure('from a Dockerfile (COPY, RUN), warm cache', (i) => build(warmRoot, `d${i}`, dockerfile));

  // Disk: one template alone, two of the same image, and with the caches.
  const root = fresh();
  build(root, 'one', image);
  build(root, 'two', image);
  const du = (...dirs) => Number(sh('du', ['-skx', '--total', ...dirs]).trim().split('\n').pop().split('\t')[0]);
  const one = du(path.join(root, 'one', 'rootfs'));
  const both = du(path.join(root, 'one', 'rootfs'), path.join(root, 'two', 'rootfs'));
  const all = du(path.join(root, 'one'), path.join(root, 'two'), path.join(root, '.images'), path.join(root, '.oci'));
  console.log(JSON.stringify({ bench: 'image_build', what: 'disk', one_kib: one, two_kib: both, with_caches_kib: all }));

  console.log('\n| build | median (ms) |\n| --- | ---: |');
  for (const [what, ms] of rows) console.log(`| ${what} | ${ms.toFixed(0)} |`);
  console.log(`\n| disk | KiB |\n| --- | ---: |`);
  console.log(`| one template's rootfs | ${one} |`);
  console.log(`| two templates of the same image, rootfs together | ${both} |`);
  console.log(`| both templates with the unpacked image and the layer cache | ${all} |`);
} finally {
  if (registry) registry.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
}
