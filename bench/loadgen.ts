import { Agent, request } from 'node:http';
import { io, type Socket } from 'socket.io-client';
import { mintToken } from '../src/realtime/mint.js';
import type { LoadCommand, LoadReply, PhaseArgs, PhaseResult, SystemTarget } from './protocol.js';
import { Samples, SeenSet, summarize } from './stats.js';

// The load generator: one process holding every client socket and the
// publisher, driven by the harness over IPC. Every message carries its phase,
// a sequence number and its send time (performance.now() of this process, so
// sender and receivers share one clock); every client counts what it saw, so
// losses and duplicates are exact whatever order messages arrive in.

interface Payload {
  /** Phase the message belongs to; a straggler from an earlier phase is not counted. */
  ph: number;
  s: number;
  t: number;
  p: string;
}

let target: SystemTarget | undefined;
const clients: (Socket | undefined)[] = [];
const seen: SeenSet[] = [];
const latencies = new Samples();
/** Latencies of clients on the publishing node (even clients) and on the other (odd), for BENCH_SPLIT. */
const split = [new Samples(), new Samples()];
let phase = 0;
/** Sequence number -> per-client key in the current phase. */
let keyOf: (seq: number, client: number) => number | undefined = (s) => s;
let received = 0;
let strays = 0;
let misrouted = 0;
let lastReceive = 0;
let disconnects = 0;
let padding = '';

function onMessage(client: number, d: Payload): void {
  if (d === null || typeof d !== 'object' || d.ph !== phase) {
    strays++;
    return;
  }
  const now = performance.now();
  const key = keyOf(d.s, client);
  if (key === undefined) {
    misrouted++;
    return;
  }
  received++;
  lastReceive = now;
  if (seen[client]!.add(key)) {
    latencies.push(now - d.t);
    split[client % 2]!.push(now - d.t);
  }
}

async function connectOne(i: number): Promise<void> {
  const t = target!;
  const url = t.urls[i % t.urls.length]!;
  const user = `u${i}`;
  const options: Parameters<typeof io>[1] = {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    timeout: 30_000,
  };
  if (t.kind === 'pushrelay') {
    options.auth = { token: await mintToken(t.jwtSecret!, user, { ttlSeconds: 6 * 3600 }) };
  } else {
    options.query = { user };
  }
  const socket = io(url, options);
  seen[i] ??= new SeenSet();
  socket.on('m', (data: Payload) => onMessage(i, data));
  socket.on('disconnect', (reason) => {
    if (reason !== 'io client disconnect') disconnects++;
  });
  // The relay says it is ready once the socket is in its channels; the baseline joins in its connection handler.
  const ready = t.kind === 'pushrelay' ? 'pushrelay:connected' : 'connect';
  await new Promise<void>((resolve, reject) => {
    socket.once(ready, () => resolve());
    socket.once('connect_error', (err) => reject(new Error(`client ${i}: ${err.message}`)));
  });
  clients[i] = socket;
}

async function connect(from: number, to: number, batch: number): Promise<void> {
  for (let i = from; i < to; i += batch) {
    const ids: number[] = [];
    for (let j = i; j < Math.min(to, i + batch); j++) ids.push(j);
    await Promise.all(ids.map(connectOne));
  }
}

function disconnect(from: number, to: number): void {
  for (let i = from; i < to; i++) {
    clients[i]?.disconnect();
    clients[i] = undefined;
  }
}

// ---------------------------------------------------------------------------
// Publishing

let agent = new Agent({ keepAlive: true, maxSockets: 16 });

function post(path: string, body: string): Promise<number> {
  const t = target!;
  const url = new URL(t.publishUrl);
  return new Promise((resolve) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(t.secret ? { authorization: `Bearer ${t.secret}` } : {}),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', () => resolve(0));
    req.end(body);
  });
}

function payload(seq: number): Payload {
  return { ph: phase, s: seq, t: performance.now(), p: padding };
}

type Shape = 'broadcast' | 'targeted' | 'batch';

/** One HTTP request of a phase; returns how many deliveries it should cause, 0 when refused. */
function sendOne(
  shape: Shape,
  seq: number,
  users: number,
  batchSize: number,
  recipients: number,
): Promise<number> {
  const relay = target!.kind === 'pushrelay';
  if (shape === 'broadcast') {
    const body = JSON.stringify({ event: 'm', data: payload(seq), broadcast: true });
    return post(relay ? '/v1/publish' : '/publish', body).then((s) => (s === 200 ? recipients : 0));
  }
  if (shape === 'targeted') {
    const user = `u${seq % users}`;
    const body = relay
      ? JSON.stringify({ event: 'm', data: payload(seq), users: [user] })
      : JSON.stringify({ event: 'm', data: payload(seq), user });
    return post(relay ? '/v1/publish' : '/publish', body).then((s) => (s === 200 ? 1 : 0));
  }
  const messages = [];
  for (let k = 0; k < batchSize; k++) {
    const s = seq + k;
    const user = `u${s % users}`;
    messages.push(
      relay ? { event: 'm', data: payload(s), users: [user] } : { event: 'm', data: payload(s), user },
    );
  }
  return post(relay ? '/v1/batch' : '/batch', JSON.stringify({ messages })).then((s) =>
    s === 200 ? batchSize : 0,
  );
}

async function runPhase(a: PhaseArgs): Promise<PhaseResult> {
  phase++;
  received = 0;
  strays = 0;
  misrouted = 0;
  latencies.clear();
  split[0]!.clear();
  split[1]!.clear();
  const connected = clients.filter((c) => c !== undefined).length;
  for (const s of seen) s.reset();
  const recipients = a.shape === 'broadcast' ? connected : 1;
  keyOf =
    a.shape === 'broadcast'
      ? (s) => s
      : (s, client) => (s % a.users === client ? Math.floor(s / a.users) : undefined);
  if (!a.reuseConnections || agent.maxSockets !== a.concurrency) {
    agent.destroy();
    agent = new Agent({ keepAlive: true, maxSockets: a.concurrency });
  }

  const perRequest = a.shape === 'batch' ? a.batchSize : 1;
  let seq = 0;
  let expected = 0;
  let httpErrors = 0;
  let requests = 0;
  let inflight = 0;
  const start = performance.now();
  lastReceive = start;
  const end = start + a.durationMs;
  let wake: (() => void) | undefined;
  const backlog = () => seq / perRequest - received / (recipients * perRequest);

  const fire = () => {
    const s = seq;
    seq += perRequest;
    requests++;
    inflight++;
    void sendOne(a.shape, s, a.users, a.batchSize, recipients).then((n) => {
      inflight--;
      if (n === 0) httpErrors++;
      expected += n;
      wake?.();
    });
  };

  if (a.rate !== undefined) {
    while (performance.now() < end) {
      const due = Math.floor(((performance.now() - start) * a.rate) / 1000) + 1;
      while (requests < due) fire();
      await sleep(Math.max(1, start + (requests * 1000) / a.rate - performance.now()));
    }
  } else {
    while (performance.now() < end) {
      while (inflight < a.concurrency && backlog() < a.window) fire();
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 2);
      });
      wake = undefined;
    }
  }
  const sendEnd = performance.now();
  while (inflight > 0) await sleep(2);
  // Everything was sent; wait for the deliveries, giving up after drainMs without progress.
  let progressAt = performance.now();
  let last = received;
  while (received < expected && performance.now() - progressAt < a.drainMs) {
    await sleep(5);
    if (received !== last) {
      last = received;
      progressAt = performance.now();
    }
  }
  let unique = 0;
  let duplicates = 0;
  for (const s of seen) {
    unique += s.unique;
    duplicates += s.duplicates;
  }
  const elapsedMs = Math.max(lastReceive, sendEnd) - start;
  if (process.env.BENCH_SPLIT && target!.urls.length > 1) {
    // Clients alternate between the nodes and publishes go to the first: even clients sit on the
    // publishing node. Where a cluster's latency comes from: its own sockets, or the other node's.
    const [own, other] = split.map((s) => summarize(s.values()));
    const ms = (l: typeof own) => `p50 ${l!.p50.toFixed(2)} p99 ${l!.p99.toFixed(2)} ms`;
    console.error(
      `[loadgen] ${target!.kind} ${a.shape}: publishing node's sockets ${ms(own)}; other node's ${ms(other)}`,
    );
  }
  return {
    requests,
    httpErrors,
    messages: requests * perRequest - httpErrors * perRequest,
    recipients: connected,
    expected,
    delivered: unique,
    lost: Math.max(0, expected - unique),
    duplicates,
    misrouted,
    strays,
    disconnects,
    elapsedMs,
    sendMs: sendEnd - start,
    latency: summarize(latencies.values()),
    ...(a.samples ? { samples: Array.from(latencies.values()) } : {}),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function handle(msg: LoadCommand): Promise<unknown> {
  switch (msg.cmd) {
    case 'init':
      target = msg.target;
      padding = 'x'.repeat(msg.paddingBytes);
      return {};
    case 'connect':
      await connect(msg.from, msg.to, msg.batch);
      return { connected: clients.filter((c) => c !== undefined).length };
    case 'disconnect':
      disconnect(msg.from, msg.to);
      return { connected: clients.filter((c) => c !== undefined).length };
    case 'phase':
      return runPhase(msg.args);
    case 'close':
      disconnect(0, clients.length);
      agent.destroy();
      setTimeout(() => process.exit(0), 50);
      return {};
  }
}

process.on('message', (msg: LoadCommand) => {
  handle(msg).then(
    (result) => process.send!({ id: msg.id, result } satisfies LoadReply),
    (err: unknown) =>
      process.send!({ id: msg.id, error: String((err as Error).stack ?? err) } satisfies LoadReply),
  );
});
