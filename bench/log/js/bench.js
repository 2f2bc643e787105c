#!/usr/bin/env node
// Baseline for the Rust log: runs hyperlog or hypercore through the same scenarios and prints one JSON
// object per scenario on stdout.
//
//   node bench.js hyperlog|hypercore [scenario ...]
//
// Each scenario runs in its own child process, so one that hangs or blows up cannot take the others
// with it, and peak RSS is not inflated by garbage left over from an earlier scenario.

'use strict'

const { spawn } = require('child_process')
const crypto = require('crypto')
const { Transform } = require('stream')
const { promisify } = require('util')

const env = (name, def) => (process.env[name] ? Number(process.env[name]) : def)

const CFG = {
  nOne: env('N_ONE', 10000),
  nBatch: env('N_BATCH', 100000),
  batchSize: env('BATCH', 1000),
  nFull: env('N_FULL', 100000),
  nBase: env('N_BASE', 100000),
  payload: env('PAYLOAD', 100),
  delayMs: env('DELAY_MS', 50),
  timeoutS: env('TIMEOUT_S', 120),
  // Building the replicas for a scenario is not measured, but it can take longer than the
  // measured part, so it gets its own limit.
  setupTimeoutS: env('SETUP_TIMEOUT_S', 600)
}

const SCENARIOS = ['append_one_by_one', 'append_batched', 'replicate_full', 'one_new_entry']

// ---------------------------------------------------------------------------------------------------
// helpers

const now = () => Number(process.hrtime.bigint()) / 1e9
const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d

// Random payloads generated up front, so the RNG is not part of the measurement.
function payloads (n) {
  const all = crypto.randomBytes(n * CFG.payload)
  const out = new Array(n)
  for (let i = 0; i < n; i++) out[i] = all.subarray(i * CFG.payload, (i + 1) * CFG.payload)
  return out
}

function withTimeout (promise, seconds, what) {
  let timer
  const limit = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${seconds} s`)), seconds * 1000)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

function rssSampler () {
  let peak = process.memoryUsage().rss
  const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 50)
  return () => {
    clearInterval(timer)
    peak = Math.max(peak, process.memoryUsage().rss)
    return round(peak / 1048576, 1)
  }
}

// One direction of the in-memory wire. Counts what passes and, with a delay, holds every chunk for
// that long before passing it on. Order is kept because every chunk waits the same time. It never
// pushes back on the writer: a link with a large buffer, so latency is the only thing it adds.
class Link extends Transform {
  constructor (delayMs) {
    super()
    this.delayMs = delayMs
    this.bytes = 0
    this.chunks = 0
    this.queue = []
    this.timer = null
    this.onEmpty = null
  }

  _transform (chunk, enc, cb) {
    this.bytes += chunk.length
    this.chunks++
    if (!this.delayMs) return cb(null, chunk)
    this.queue.push([Date.now() + this.delayMs, chunk])
    this._arm()
    cb()
  }

  _arm () {
    if (this.timer || this.queue.length === 0) return
    this.timer = setTimeout(() => {
      this.timer = null
      const t = Date.now()
      while (this.queue.length && this.queue[0][0] <= t) this.push(this.queue.shift()[1])
      if (this.queue.length) this._arm()
      else if (this.onEmpty) this.onEmpty()
    }, Math.max(0, this.queue[0][0] - Date.now()))
  }

  _flush (cb) {
    if (this.queue.length === 0) return cb()
    this.onEmpty = cb
  }

  _destroy (err, cb) {
    clearTimeout(this.timer)
    this.queue = []
    cb(err)
  }
}

// Connects two replication streams through a Link in each direction, waits until `synced` resolves,
// then tears the wire down and reports what crossed it.
async function connect (lib, a, b, target, delayMs) {
  const [sa, sb] = lib.streams(a, b)
  const ab = new Link(delayMs)
  const ba = new Link(delayMs)
  const failed = new Promise((resolve, reject) => {
    for (const s of [sa, sb, ab, ba]) s.on('error', reject)
  })
  sa.pipe(ab).pipe(sb).pipe(ba).pipe(sa)
  await Promise.race([lib.synced(a, b, target, sa, sb), failed])
  for (const s of [sa, sb, ab, ba]) {
    s.removeAllListeners('error')
    s.on('error', () => {}) // teardown errors after the sync are irrelevant
    s.destroy()
  }
  return { ab, ba }
}

// ---------------------------------------------------------------------------------------------------
// libraries

const hyperlogLib = {
  name: 'hyperlog',
  notes: {
    append_batched: 'hyperlog batch() cannot link an entry to another in the same batch (links must ' +
      'already be stored), so each batch extends BATCH parallel chains, one link per entry as in a chain',
    replicate_full: 'replica built as parallel chains of batches plus one entry merging the heads; ' +
      'seconds run until both replication streams have ended',
    one_new_entry: 'N is 100000 by default, not 1000000: building a million-entry hyperlog base twice ' +
      'is impractical; seconds run until both replication streams have ended'
  },

  async create () {
    const hyperlog = require('hyperlog')
    const memdb = require('memdb')
    const log = hyperlog(memdb())
    await new Promise((resolve) => log.ready(resolve))
    return log
  },

  appendOne (log, value) {
    return promisify(log.append.bind(log))(value)
  },

  // `state.tips` holds the newest node of each parallel chain; see notes.append_batched.
  async appendBatch (log, values, state) {
    if (!state.tips) state.tips = (await promisify(log.heads.bind(log))()).map((n) => n.key)
    const tips = state.tips
    const docs = values.map((value, i) => ({ links: tips.length ? [tips[i % tips.length]] : [], value }))
    const nodes = await promisify(log.batch.bind(log))(docs)
    if (nodes.length !== docs.length) throw new Error(`batch stored ${nodes.length} of ${docs.length}`)
    state.tips = nodes.map((n) => n.key)
  },

  // n entries with a single head at the end, so a later append links one node.
  async fill (log, n) {
    const values = payloads(n)
    const state = {}
    for (let i = 0; i < n - 1; i += CFG.batchSize) {
      await this.appendBatch(log, values.slice(i, Math.min(i + CFG.batchSize, n - 1)), state)
    }
    await this.appendOne(log, values[n - 1])
  },

  replica () {
    return this.create()
  },

  length (log) {
    return log.changes
  },

  streams (a, b) {
    return [a.replicate(), b.replicate()]
  },

  // A non-live hyperlog replication ends by itself once both sides have what the other had.
  async synced (a, b, target, sa, sb) {
    await Promise.all([sa, sb].map((s) => new Promise((resolve) => s.once('end', resolve))))
    if (b.changes < target) throw new Error(`replication ended with ${b.changes} of ${target} entries`)
  },

  async close () {}
}

const hypercoreLib = {
  name: 'hypercore',
  notes: {
    replicate_full: 'the replica is non-sparse; seconds run until it holds all N blocks, then the ' +
      'streams are torn down (hypercore replication stays open by design)',
    one_new_entry: 'seconds run until the replica holds the new block (includes the Noise handshake)'
  },

  async create (key, opts) {
    const Hypercore = require('hypercore')
    const RAM = require('random-access-memory')
    const core = new Hypercore(RAM, key, opts)
    await core.ready()
    return core
  },

  appendOne (core, value) {
    return core.append(value)
  },

  appendBatch (core, values) {
    return core.append(values)
  },

  async fill (core, n) {
    const values = payloads(n)
    for (let i = 0; i < n; i += CFG.batchSize) await core.append(values.slice(i, i + CFG.batchSize))
  },

  // Non-sparse, so it downloads everything it learns about, like a full replica.
  replica (a) {
    return this.create(a.key, { sparse: false })
  },

  length (core) {
    return core.contiguousLength
  },

  streams (a, b) {
    return [a.replicate(true, { keepAlive: false }), b.replicate(false, { keepAlive: false })]
  },

  synced (a, b, target) {
    return new Promise((resolve) => {
      const check = () => {
        if (b.contiguousLength < target) return
        b.off('download', check)
        resolve()
      }
      b.on('download', check)
      check()
    })
  },

  async close (...cores) {
    for (const c of cores) await c.close()
  }
}

const LIBS = { hyperlog: hyperlogLib, hypercore: hypercoreLib }

// ---------------------------------------------------------------------------------------------------
// scenarios: each returns { setup, run }; setup is unmeasured, run returns the measured fields

const scenarios = {
  append_one_by_one (lib) {
    const n = CFG.nOne
    let log, values
    return {
      n,
      async setup () {
        log = await lib.create()
        values = payloads(n)
      },
      async run () {
        const t0 = now()
        for (let i = 0; i < n; i++) await lib.appendOne(log, values[i])
        const s = now() - t0
        if (lib.length(log) !== n) throw new Error(`log holds ${lib.length(log)} of ${n}`)
        await lib.close(log)
        return { seconds: round(s, 3), per_second: Math.round(n / s) }
      }
    }
  },

  append_batched (lib) {
    const n = CFG.nBatch
    let log, values
    return {
      n,
      async setup () {
        log = await lib.create()
        values = payloads(n)
      },
      async run () {
        const state = {}
        const t0 = now()
        for (let i = 0; i < n; i += CFG.batchSize) {
          await lib.appendBatch(log, values.slice(i, i + CFG.batchSize), state)
        }
        const s = now() - t0
        if (lib.length(log) !== n) throw new Error(`log holds ${lib.length(log)} of ${n}`)
        await lib.close(log)
        return { batch: CFG.batchSize, seconds: round(s, 3), per_second: Math.round(n / s) }
      }
    }
  },

  replicate_full (lib) {
    const n = CFG.nFull
    let a, b
    return {
      n,
      async setup () {
        a = await lib.create()
        await lib.fill(a, n)
        b = await lib.replica(a)
      },
      async run () {
        const peak = rssSampler()
        const t0 = now()
        const { ab, ba } = await connect(lib, a, b, n, 0)
        const s = now() - t0
        const peakMb = peak()
        if (lib.length(b) !== n) throw new Error(`replica holds ${lib.length(b)} of ${n}`)
        await lib.close(a, b)
        const total = ab.bytes + ba.bytes
        return {
          seconds: round(s, 3),
          bytes_a_to_b: ab.bytes,
          bytes_b_to_a: ba.bytes,
          wire_bytes_per_entry: round(total / n, 1),
          payload_ratio: round(total / (n * CFG.payload), 3),
          peak_rss_mb: peakMb
        }
      }
    }
  },

  one_new_entry (lib) {
    const n = CFG.nBase
    let a, b
    return {
      n,
      async setup () {
        a = await lib.create()
        await lib.fill(a, n)
        b = await lib.replica(a)
        await connect(lib, a, b, n, 0)
        if (lib.length(b) !== n) throw new Error(`base replica holds ${lib.length(b)} of ${n}`)
        await lib.appendOne(a, payloads(1)[0])
      },
      async run () {
        const t0 = now()
        const { ab, ba } = await connect(lib, a, b, n + 1, CFG.delayMs)
        const s = now() - t0
        if (lib.length(b) !== n + 1) throw new Error(`replica holds ${lib.length(b)} of ${n + 1}`)
        await lib.close(a, b)
        return {
          delay_ms: CFG.delayMs,
          seconds: round(s, 3),
          round_trips: round(s / ((2 * CFG.delayMs) / 1000), 1),
          bytes_total: ab.bytes + ba.bytes,
          bytes_a_to_b: ab.bytes,
          bytes_b_to_a: ba.bytes,
          messages: ab.chunks + ba.chunks
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// drivers

function print (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Child: run one scenario, print its line, exit (open handles of a failed run must not keep it alive).
async function runOne (libName, scenario) {
  const lib = LIBS[libName]
  const head = { impl: libName, scenario }
  let sc
  try {
    sc = scenarios[scenario](lib)
    head.n = sc.n
    await withTimeout(sc.setup(), CFG.setupTimeoutS, 'setup')
    const result = await withTimeout(sc.run(), CFG.timeoutS, 'scenario')
    const note = lib.notes[scenario]
    print({ ...head, ...result, ...(note ? { note } : {}) })
  } catch (err) {
    print({ ...head, error: String((err && err.message) || err) })
  }
  process.exit(0)
}

// Parent: one child per scenario, with a hard kill as a backstop for a blocked event loop.
function runChild (libName, scenario) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [__filename, libName, '--child', scenario], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { err += d; process.stderr.write(d) })
    const killer = setTimeout(() => child.kill('SIGKILL'), (CFG.timeoutS + CFG.setupTimeoutS + 30) * 1000)
    child.on('close', (code, signal) => {
      clearTimeout(killer)
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (line) print(JSON.parse(line))
      else {
        const why = signal ? `killed by ${signal}` : `exited with ${code}`
        print({ impl: libName, scenario, error: `${why}: ${err.trim().split('\n').slice(-3).join(' | ')}` })
      }
      resolve()
    })
  })
}

async function main () {
  const [libName, ...rest] = process.argv.slice(2)
  if (!LIBS[libName]) {
    process.stderr.write('usage: node bench.js hyperlog|hypercore [scenario ...]\n')
    process.exit(2)
  }
  if (rest[0] === '--child') return runOne(libName, rest[1])
  const chosen = rest.length ? rest : SCENARIOS
  for (const s of chosen) {
    if (!scenarios[s]) {
      print({ impl: libName, scenario: s, error: 'unknown scenario' })
      continue
    }
    await runChild(libName, s)
  }
}

main()
