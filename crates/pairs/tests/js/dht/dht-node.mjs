#!/usr/bin/env node
// A WebTorrent DHT node (bittorrent-dht) for interop tests. It joins the DHT through --bootstrap,
// announces and looks up infohashes, and reports what happens as one JSON object per line on stdout.
//
//   node dht-node.mjs --bootstrap HOST:PORT[,HOST:PORT...]|none [--bind ADDR]
//                     [--announce INFOHASH_HEX:PORT]... [--lookup INFOHASH_HEX]... [--timeout SECONDS]
//                     [--bep44]
//
// Events: ready {port}; announced {infohash, port}; peer {infohash, addr} (each address once per
// infohash); lookup_done {infohash, round, nodes}; error {op, message, ...}. `--bootstrap none`
// starts the first node of a network. An announce with port 0 asks for implied_port (the DHT
// socket's own port). The node keeps answering queries until the timeout (default 20 s), SIGTERM
// or SIGINT, or, when stdin is a pipe, until stdin closes; then it exits 0.
import DHT from 'bittorrent-dht'
import { createPublicKey, verify } from 'node:crypto'
import { once } from 'node:events'
import { fstatSync } from 'node:fs'
import { parseArgs } from 'node:util'

const { values: args } = parseArgs({
  options: {
    bootstrap: { type: 'string' },
    bind: { type: 'string', default: '127.0.0.1' },
    announce: { type: 'string', multiple: true, default: [] },
    lookup: { type: 'string', multiple: true, default: [] },
    timeout: { type: 'string', default: '20' },
    bep44: { type: 'boolean', default: false }
  }
})

function fail (message) {
  console.error(`dht-node: ${message}`)
  process.exit(2)
}

const hex = s => /^[0-9a-f]{40}$/i.test(s) ? s.toLowerCase() : fail(`bad infohash: ${s}`)
if (!args.bootstrap) fail('--bootstrap HOST:PORT[,...] or --bootstrap none is required')
const bootstrap = args.bootstrap === 'none' ? false : args.bootstrap.split(',')
const announces = args.announce.map(a => {
  const [infohash, port] = a.split(':')
  if (!/^\d+$/.test(port ?? '') || Number(port) > 65535) fail(`bad --announce: ${a}`)
  return { infohash: hex(infohash), port: Number(port) }
})
const lookups = [...new Set(args.lookup.map(hex))]
const timeout = Number(args.timeout)
if (!(timeout > 0)) fail(`bad --timeout: ${args.timeout}`)

// Node writes stdout synchronously to files, and to pipes on Linux: each line is out as soon as it is
// emitted, and none is lost by process.exit().
const emit = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')

function ed25519Verify (sig, msg, k) {
  try {
    const x = Buffer.from(k).toString('base64url')
    return verify(null, msg, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' }), sig)
  } catch {
    return false // a malformed key or signature from the network
  }
}

let stopping = false
function stop () {
  if (stopping) return
  stopping = true
  dht.destroy(() => process.exit(0))
}

const dht = new DHT({ bootstrap, verify: args.bep44 ? ed25519Verify : null })
// Bind now: the bootstrap queries go out on the next tick, and a first send on an unbound socket
// would bind it to every interface instead.
dht.listen(0, args.bind)
dht.on('warning', err => console.error(`dht-node: warning: ${err.message}`))

setTimeout(stop, timeout * 1000)
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
// Only a pipe is a parent's lifeline: /dev/null or a terminal would end (or never end) at once.
try {
  const st = fstatSync(0)
  if (st.isFIFO() || st.isSocket()) process.stdin.on('end', stop).resume()
} catch {}

try {
  await Promise.all([once(dht, 'ready'), once(dht, 'listening')])
} catch (err) {
  emit('error', { op: 'listen', message: err.message })
  process.exit(1)
}
emit('ready', { port: dht.address().port })

for (const { infohash, port } of announces) {
  dht.announce(infohash, port, err => {
    if (err) emit('error', { op: 'announce', infohash, port, message: err.message })
    else emit('announced', { infohash, port })
  })
}

// 'peer' events also come from the lookups inside announce(); report only the asked-for infohashes.
const seen = new Map(lookups.map(h => [h, new Set()]))
dht.on('peer', (peer, infoHash) => {
  const infohash = Buffer.from(infoHash).toString('hex')
  const addr = `${peer.host}:${peer.port}`
  const addrs = seen.get(infohash)
  if (!addrs || addrs.has(addr)) return
  addrs.add(addr)
  emit('peer', { infohash, addr })
})

// A lookup is a single walk of the DHT: repeat it so that peers announced later are found too.
function lookup (infohash, round) {
  if (stopping) return
  dht.lookup(infohash, (err, nodes) => {
    if (stopping) return
    if (err) emit('error', { op: 'lookup', infohash, message: err.message })
    else emit('lookup_done', { infohash, round, nodes })
    setTimeout(lookup, 1000, infohash, round + 1)
  })
}
for (const infohash of lookups) lookup(infohash, 1)
