// The fake internet's servers, run by tests/e2e/net/run.sh inside its "inet"
// namespace (never on the host): on each web address (and the fake metadata
// address, a private one and the link's own) an HTTP server answering JSON {host, client, server, path};
// GET /bytes/<n> sends n bytes. On the first web address also: a UDP echo
// (port 5353), a TCP sink (port 9000: reads until the client half-closes,
// then answers the byte count it saw) and a port that accepts and closes
// (9001, for connect latency). Touches the file named by argv[2] once every
// socket listens.
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import fs from 'node:fs';

const WEB = ['203.0.113.10', '203.0.113.11', '169.254.169.254', '10.99.0.10', '198.18.0.2'];
const chunk = Buffer.alloc(1 << 16, 0x61);

const listen = (srv, port, host) => new Promise((res, rej) => { srv.once('error', rej); srv.listen(port, host, res); });

const handler = (req, res) => {
  const m = /^\/bytes\/(\d+)$/.exec(req.url);
  if (m) {
    let left = Number(m[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
    const more = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { res.once('drain', more); return; }
      }
      res.end();
    };
    more();
    return;
  }
  const body = JSON.stringify({ host: req.headers.host ?? null, client: req.socket.remoteAddress,
    server: req.socket.localAddress, path: req.url });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
};

for (const a of WEB) {
  const srv = http.createServer(handler);
  srv.keepAliveTimeout = 1000;
  await listen(srv, 80, a);
}

const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
await new Promise((res, rej) => { udp.once('error', rej); udp.bind(5353, WEB[0], res); });

const sink = net.createServer((s) => {
  let n = 0;
  s.on('data', (d) => { n += d.length; });
  s.on('end', () => s.end(`${n}\n`));
  s.on('error', () => {});
});
await listen(sink, 9000, WEB[0]);

const closer = net.createServer((s) => { s.on('error', () => {}); s.end(); });
await listen(closer, 9001, WEB[0]);

fs.writeFileSync(process.argv[2], `${process.pid}\n`);
console.log('inet: ready');
