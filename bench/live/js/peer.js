// The npm baseline of bench/live-propagation.sh: hypercore replicated live over hyperswarm, whose
// DHT is a local testnet (never the public bootstrap nodes).
//
//   node peer.js dht HOST PORT [NODES]      a hyperdht testnet on HOST (first node at PORT); prints "ready"
//   node peer.js writer HOST:PORT DIR       a new core in DIR; prints "key HEX", then appends each stdin
//                                           line and prints "ok LINE" once its append resolved
//   node peer.js reader HOST:PORT DIR KEY   a replica of KEY in DIR; prints each entry as one line on arrival
//
// writer and reader print "connected" on stderr when a swarm connection opens.
'use strict'

const path = require('path')
const readline = require('readline')

function bootstrapOf(arg) {
  const [host, port] = arg.split(':')
  return [{ host, port: Number(port) }]
}

async function dht(host, port, nodes) {
  const createTestnet = require('hyperdht/testnet')
  // A node samples its NAT through at least 4 other DHT nodes (hyperdht/lib/nat.js): one
  // bootstrap node alone would leave every firewalled peer's NAT type unknown.
  const testnet = await createTestnet(nodes, { host, port })
  process.stdout.write('ready\n')
  const stop = async () => {
    await testnet.destroy()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

function swarmFor(bootstrap, core) {
  const Hyperswarm = require('hyperswarm')
  const swarm = new Hyperswarm({ bootstrap })
  swarm.on('connection', (conn) => {
    process.stderr.write('connected\n')
    conn.on('error', () => {})
    core.replicate(conn)
  })
  const stop = async () => {
    await swarm.destroy()
    await core.close()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
  return swarm
}

async function writer(bootstrap, dir) {
  const Hypercore = require('hypercore')
  const core = new Hypercore(path.join(dir, 'core'))
  await core.ready()
  const swarm = swarmFor(bootstrap, core)
  swarm.join(core.discoveryKey, { server: true, client: true })
  process.stdout.write('key ' + core.key.toString('hex') + '\n')
  const lines = readline.createInterface({ input: process.stdin })
  // Appends are queued by hypercore in call order; one entry per line, as it arrives.
  lines.on('line', (line) => {
    core.append(Buffer.from(line)).then(() => {
      process.stdout.write('ok ' + line + '\n')
    }, (err) => {
      process.stderr.write('append failed: ' + err.message + '\n')
      process.exit(1)
    })
  })
}

async function reader(bootstrap, dir, key) {
  const Hypercore = require('hypercore')
  const core = new Hypercore(path.join(dir, 'core'), Buffer.from(key, 'hex'))
  await core.ready()
  const swarm = swarmFor(bootstrap, core)
  swarm.join(core.discoveryKey, { server: true, client: true })
  // Fetch every block as soon as the writer announces it (live range), and print them in order.
  core.download({ start: 0, end: -1 })
  for await (const block of core.createReadStream({ start: 0, live: true })) {
    process.stdout.write(block.toString() + '\n')
  }
}

async function main() {
  const [mode, ...args] = process.argv.slice(2)
  if (mode === 'dht') return dht(args[0], Number(args[1]), Number(args[2] || 8))
  if (mode === 'writer') return writer(bootstrapOf(args[0]), args[1])
  if (mode === 'reader') return reader(bootstrapOf(args[0]), args[1], args[2])
  throw new Error('usage: peer.js dht|writer|reader ...')
}

main().catch((err) => {
  process.stderr.write((err && err.stack) || String(err))
  process.stderr.write('\n')
  process.exit(1)
})
