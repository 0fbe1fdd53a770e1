// The fake internet of tests/e2e/net/run.sh, seen from inside its "gw"
// namespace: the addresses and names it serves, the gateway flags that point
// a coppiced at it, and small helpers. A test file that uses the network
// runs only through run.sh (fakenetSkipReason says so otherwise), so nothing
// it does can reach a real address or the host's resolver.
import { execFileSync } from 'node:child_process';
import dns from 'node:dns';
import fs from 'node:fs';

// Keep in step with tests/e2e/net/run.sh and inet.mjs.
export const FAKENET = {
  uplink: 'up0',
  gwUplinkAddr: '198.18.0.1',   // B's end of the link (the gateway host's uplink address)
  inetLinkAddr: '198.18.0.2',   // A's end (HTTP :80 there too)
  web: '203.0.113.10',          // HTTP :80 (JSON {host, client, server, path}; /bytes/<n>), UDP echo :5353,
                                // TCP sink :9000 (answers the byte count after the client half-closes),
                                // accept-and-close :9001
  web2: '203.0.113.11',         // HTTP :80
  dns: '198.51.100.53',         // dnsmasq: only the names below, NXDOMAIN for other *.fake.test, forwards nothing
  metadata: '169.254.169.254',  // HTTP :80, a fake cloud metadata server (reachable from B itself)
  private: '10.99.0.10',        // HTTP :80 in a private range (refused to sandboxes unless --open-range)
  udpEchoPort: 5353,
  sinkPort: 9000,
  closePort: 9001,
  names: {
    'web.fake.test': '203.0.113.10',
    'other.fake.test': '203.0.113.10',  // another name on the same server
    'web2.fake.test': '203.0.113.11',
    'a.sub.fake.test': '203.0.113.11',
  },
};

// Flags that give a coppiced networking with the fake internet as its uplink
// and the fake DNS server as its only upstream.
export const gatewayNetArgs = () => ['--network', 'on', '--uplink', FAKENET.uplink, '--dns-upstream', FAKENET.dns];

// Why a network test cannot run here, or null inside run.sh's world.
export function fakenetSkipReason() {
  if (process.env.COPPICE_FAKENET !== '1') return 'needs the fake internet: run through tests/e2e/net/run.sh';
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    execFileSync('ip', ['-o', 'link', 'show', FAKENET.uplink], { stdio: 'pipe' });
  } catch {
    return `no ${FAKENET.uplink} here: not inside run.sh's namespace`;
  }
  return null;
}

// A resolver that asks the fake DNS server only (short timeout, no retries).
export function fakeResolver() {
  const r = new dns.promises.Resolver({ timeout: 1000, tries: 1 });
  r.setServers([FAKENET.dns]);
  return r;
}

// Interface names in this namespace (`ip -o link`), without the @peer suffix.
export function linkNames() {
  return execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
    .map((l) => l.split(':')[1].trim().split('@')[0]);
}

// Names of the links of one kind here (`ip -o link show type KIND`).
export function linksOfType(kind) {
  return execFileSync('ip', ['-o', 'link', 'show', 'type', kind], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
    .map((l) => l.split(':')[1].trim().split('@')[0]);
}

export function conntrackAvailable() {
  try { execFileSync('conntrack', ['--version'], { stdio: 'pipe' }); return true; } catch { return false; }
}

// Conntrack entries whose original source lies in an IPv4 subnet (a.b.c.d/nn).
// Entries whose original source is a sandbox of `cidr`: the first address
// is the bridge's own (the host's IGMP reports and its own flows are not a
// sandbox's).
export function conntrackFrom(cidr) {
  let out = '';
  try {
    out = execFileSync('conntrack', ['-L', '-f', 'ipv4', '-s', cidr], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    out = e.stdout || '';
  }
  const [base] = cidr.split('/');
  const bridge = base.replace(/\.\d+$/, (m) => `.${Number(m.slice(1)) + 1}`);
  return out.split('\n').filter((l) => l.includes('src=') && !l.includes(` src=${bridge} `));
}

// The nft ruleset as parsed JSON (`nft -j list ruleset`).
export function nftRuleset() {
  return JSON.parse(execFileSync('nft', ['-j', 'list', 'ruleset'], { encoding: 'utf8' })).nftables;
}

// Elements of nft sets (any table) that name a sandbox address of `cidr`:
// not the subnet's network, gateway (.1) or broadcast address, which the
// gateway's always-refused set holds as a range. As "table/set: element".
export function sandboxElements(cidr) {
  const [netAddr, len] = cidr.split('/');
  const base = ip4(netAddr);
  const fixed = new Set([base, base + 1, base + 2 ** (32 - Number(len)) - 1]);
  const out = [];
  for (const o of nftRuleset()) {
    if (!o.set) continue;
    for (const e of o.set.elem || []) {
      const s = JSON.stringify(e);
      const addrs = s.match(/\d+\.\d+\.\d+\.\d+/g) || [];
      if (addrs.some((a) => inCidr(a, cidr) && !fixed.has(ip4(a)))) out.push(`${o.set.table}/${o.set.name}: ${s}`);
    }
  }
  return out;
}

// IPv4 address -> number and back, and "is a.b.c.d inside cidr".
export const ip4 = (s) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);
export function inCidr(addr, cidr) {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(ip4(addr) / size) === Math.floor(ip4(net) / size);
}

export const readFile = (p) => { try { return fs.readFileSync(p, 'utf8'); } catch { return null; } };
