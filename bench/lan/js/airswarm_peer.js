#!/usr/bin/env node
// Node.js baseline for the pairs LAN-discovery benchmark.
//
// usage: node airswarm_peer.js NAME
//
// Joins the airswarm NAME and writes one JSON line per event to stdout, with
// t_ms = milliseconds since process start (performance.now(), whose origin is
// the start of the process):
//   {"t_ms":12.345,"event":"start","name":"NAME","pid":123,"epoch_ms":1700000000000.123}
//   {"t_ms":45.678,"event":"connection","peers":1,"dir":"out","remote":"10.0.1.12:40123"}
// A connection line is written when the TCP connection is established: at once
// for an accepted socket ("dir":"in"); for a dialled one ("dir":"out": airswarm
// lets the peer with the lexicographically smaller "ip:port" id dial) on the
// socket's 'connect' event, as airswarm emits 'peer' right after net.connect().
// "peers" is the swarm's peer count (swarm.peers.length) at that moment; it
// counts dials still in progress too. epoch_ms (start line only) is
// performance.timeOrigin + t_ms, to line up the clocks of several processes.
// Runs until killed.
'use strict'

const { performance } = require('perf_hooks')
const airswarm = require('airswarm')

const name = process.argv[2]
if (!name || process.argv.length > 3) {
  process.stderr.write('usage: node airswarm_peer.js NAME\n')
  process.exit(2)
}

function now () {
  return Math.round(performance.now() * 1000) / 1000
}

function emit (obj) {
  // stdout to a file or pipe is synchronous on Linux: no line is lost on kill
  process.stdout.write(JSON.stringify(obj) + '\n')
}

const t0 = now()
emit({ t_ms: t0, event: 'start', name, pid: process.pid, epoch_ms: Math.round((performance.timeOrigin + t0) * 1000) / 1000 })

const swarm = airswarm(name, function (sock) {
  // airswarm emits 'peer' for a dialled socket straight after net.connect():
  // report it once the TCP connection is actually established
  const dir = sock.connecting ? 'out' : 'in'
  const report = function () {
    emit({
      t_ms: now(),
      event: 'connection',
      peers: swarm.peers.length,
      dir,
      remote: String(sock.remoteAddress).replace(/^::ffff:/, '') + ':' + sock.remotePort
    })
  }
  if (dir === 'out') sock.once('connect', report)
  else report()
  // nothing is ever sent on the sockets; keep them drained anyway
  sock.resume()
})

swarm.on('error', function (err) {
  process.stderr.write('airswarm_peer: ' + (err && err.stack || err) + '\n')
  process.exit(1)
})

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0))
