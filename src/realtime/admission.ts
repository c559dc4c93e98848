import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { Config } from '../config/index.js';
import type { TrustProxy } from '../config/schema.js';
import type { ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import type { RelayServer, RelaySocket } from './events.js';
import { fullBucket, take } from './limits.js';
import { originAllowed } from './server.js';

/** What admission needs to know about the node, beyond its configuration. */
export interface AdmissionState {
  readonly draining: () => boolean;
  /** Redis is down or not answering: a socket could not be set up, so it is answered at once. */
  readonly redisDown: () => boolean;
}

/** An engine.io connection as admission sees it. */
interface EngineConn {
  readonly request: IncomingMessage;
  on(event: 'close', listener: (this: EngineConn) => void): unknown;
  off(event: 'close', listener: (this: EngineConn) => void): unknown;
  rawListeners(event: 'close'): readonly unknown[];
  removeAllListeners(event: 'close'): unknown;
  close(): void;
}

/**
 * Who may take one of this node's connection slots, in two steps:
 *
 * 1. `handshake(req)`, engine.io's allowRequest: cheap refusals before any
 *    Socket.IO handshake (draining, Origin, Redis, a node already full of
 *    authenticated sockets, too many handshakes still unauthenticated from
 *    this client address, the node's handshake rate). socket.io-client
 *    retries these with backoff.
 * 2. `socket(socket)`, once the client proved who it is (its token verified;
 *    in Laravel Echo mode, once its Socket.IO connect is complete): only now
 *    does it count against PUSHRELAY_MAX_CONNECTIONS.
 *
 * So a client that never authenticates spends no slot: it holds a pending
 * handshake of its address for at most PUSHRELAY_PREAUTH_TIMEOUT_MS (Socket.IO
 * `connectTimeout`), and one address can hold only
 * PUSHRELAY_PREAUTH_PER_ADDRESS of those, refused without spending the
 * node's handshake rate that other clients need. Past PUSHRELAY_PREAUTH_MAX
 * unauthenticated handshakes on the node (many addresses at once), the
 * oldest is closed to make room: a real client authenticates within a round
 * trip of its handshake, so it is never the oldest for long.
 */
export class Admission {
  /** Unauthenticated engine connections per client address. */
  private readonly pending = new Map<string, number>();
  /** Each pending engine connection and the address it was counted under, oldest first. */
  private readonly pendingOf = new Map<EngineConn, string>();
  /** Connected tokenless (Laravel Echo) sockets per client address, capped at PUSHRELAY_ECHO_MAX_PER_ADDRESS. */
  private readonly echoes = new Map<string, number>();
  /** Each counted Echo socket and the address it was counted under. */
  private readonly echoOf = new Map<RelaySocket, string>();
  private readonly handshakes: ReturnType<typeof fullBucket>;
  private readonly address: (req: IncomingMessage) => string;
  /**
   * One close listener shared by every pending connection (the connection is
   * `this`), removed once the connection is settled: a closure and a `once`
   * wrapper per connection stayed on its listener list for its whole life.
   */
  private readonly settleOnClose: (this: EngineConn) => void;

  constructor(
    private readonly io: () => RelayServer,
    private readonly config: Config,
    private readonly metrics: Metrics,
    private readonly state: AdmissionState,
  ) {
    this.handshakes = fullBucket(config.connectRate);
    this.address = clientAddress(config.trustProxy);
    const admission = this;
    this.settleOnClose = function (this: EngineConn) {
      admission.settle(this);
    };
  }

  /** Counts engine connections as pending from their address until they authenticate or close. */
  watch(io: RelayServer): void {
    io.engine.on('connection', (conn: EngineConn) => {
      const address = this.address(conn.request);
      this.pending.set(address, (this.pending.get(address) ?? 0) + 1);
      this.pendingOf.set(conn, address);
      conn.on('close', this.settleOnClose);
    });
  }

  handshake(req: IncomingMessage): ErrorCode | undefined {
    if (this.state.draining()) return 'draining';
    if (!originAllowed(this.config, req.headers.origin)) return 'origin_not_allowed';
    if (this.state.redisDown()) return 'unavailable';
    const io = this.io();
    // Admission keeps a reconnect storm (a node drained or lost) from toppling the
    // survivors: refused handshakes are retried by socket.io-client with backoff.
    if (io.of('/').sockets.size >= this.config.maxConnections) return 'over_capacity';
    if ((this.pending.get(this.address(req)) ?? 0) >= this.config.preauthPerAddress) {
      this.metrics.rateLimited.inc({ scope: 'address' });
      return 'rate_limited';
    }
    if (!take(this.handshakes, this.config.connectRate, this.config.connectRate)) {
      this.metrics.rateLimited.inc({ scope: 'connection' });
      return 'rate_limited';
    }
    // Only a handshake that is let in makes room: one refused anyway closes nobody.
    if (this.pendingOf.size >= this.config.preauthMax) {
      const [oldest] = this.pendingOf.keys();
      this.settle(oldest!);
      oldest!.close();
      this.metrics.rateLimited.inc({ scope: 'preauth_evicted' });
    }
    return undefined;
  }

  /**
   * Called once a socket is authenticated (or, tokenless in Echo mode, its
   * Socket.IO connect is complete), just before it is admitted: undefined
   * gives it a slot.
   */
  socket(socket: RelaySocket): ErrorCode | undefined {
    if (this.state.draining()) return 'draining';
    // Several handshakes may have authenticated at once for the last slots.
    if (this.io().of('/').sockets.size >= this.config.maxConnections) return 'over_capacity';
    if (socket.data.echo && !this.countEcho(socket)) {
      this.metrics.rateLimited.inc({ scope: 'echo_address' });
      return 'rate_limited';
    }
    this.settle(socket.conn);
    compactCloseListeners(socket.conn);
    return undefined;
  }

  /** Client addresses holding connected Echo sockets now, for metrics. */
  echoAddressCount(): number {
    return this.echoes.size;
  }

  /**
   * An Echo socket has no token, so nothing else stops one address from
   * taking every slot of the node and holding them: it is counted under its
   * address until it is gone. Gone is its disconnect, or its engine
   * connection's close if it never connected (closed between this check and
   * Socket.IO's connect, it emits no disconnect); one socket per engine
   * connection is not assumed (a client may CONNECT '/' more than once).
   */
  private countEcho(socket: RelaySocket): boolean {
    const cap = this.config.echoMaxPerAddress;
    if (cap === 0) return true;
    // A connection's token socket lets go of its request once connected (see
    // releaseRequest); Socket.IO refuses a CONNECT after that, but should one
    // come through, its handshake still has the peer's address.
    const request = socket.request as IncomingMessage | null;
    const address = request === null ? socket.handshake.address : this.address(request);
    const held = this.echoes.get(address) ?? 0;
    if (held >= cap) return false;
    this.echoes.set(address, held + 1);
    this.echoOf.set(socket, address);
    const release = () => {
      socket.off('disconnect', release);
      socket.conn.off('close', release);
      const counted = this.echoOf.get(socket);
      if (counted === undefined) return;
      this.echoOf.delete(socket);
      const left = (this.echoes.get(counted) ?? 1) - 1;
      if (left <= 0) this.echoes.delete(counted);
      else this.echoes.set(counted, left);
    };
    socket.once('disconnect', release);
    socket.conn.once('close', release);
    return true;
  }

  /** Unauthenticated engine connections now, for metrics. */
  pendingCount(): number {
    return this.pendingOf.size;
  }

  private settle(conn: EngineConn): void {
    const address = this.pendingOf.get(conn);
    if (address === undefined) return;
    this.pendingOf.delete(conn);
    conn.off('close', this.settleOnClose);
    const left = (this.pending.get(address) ?? 1) - 1;
    if (left <= 0) this.pending.delete(address);
    else this.pending.set(address, left);
  }
}

/**
 * Admission's close listener was the connection's third, which made Node
 * grow the listener array to 19 slots, a capacity it keeps after the
 * listener is removed (~140 bytes for the connection's life). Once settled,
 * the listeners left are added again, in order, into an array of their own
 * size. Only between turns, never from a `close` being emitted; `once`
 * listeners are re-added as the wrappers they are, so they still run once.
 */
function compactCloseListeners(conn: EngineConn): void {
  const listeners = conn.rawListeners('close');
  if (listeners.length < 2) return;
  conn.removeAllListeners('close');
  for (const listener of listeners) conn.on('close', listener as (this: EngineConn) => void);
}

/**
 * The client's address as the operator's PUSHRELAY_TRUST_PROXY says to read
 * it (the same rule Fastify applies to HTTP requests): the peer itself, or
 * the nearest X-Forwarded-For entry not added by a trusted proxy.
 */
export function clientAddress(trust: TrustProxy): (req: IncomingMessage) => string {
  const peer = (req: IncomingMessage) => req.socket.remoteAddress ?? '';
  if (trust === false) return peer;
  const chain = (req: IncomingMessage) => {
    const header = req.headers['x-forwarded-for'];
    const forwarded = (Array.isArray(header) ? header.join(',') : (header ?? ''))
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
    // Nearest first: the peer, then what each proxy said it was talking to.
    return [peer(req), ...forwarded.reverse()];
  };
  if (trust === true) return (req) => chain(req).at(-1) ?? '';
  if (typeof trust === 'number') {
    return (req) => {
      const hops = chain(req);
      return hops[Math.min(trust, hops.length - 1)] ?? '';
    };
  }
  const trusted = new BlockList();
  for (const entry of trust) {
    const [address = '', bits] = entry.split('/');
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) trusted.addAddress(address, type);
    else trusted.addSubnet(address, Number(bits), type);
  }
  const isTrusted = (address: string) => {
    const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
    const family = isIP(plain);
    return family !== 0 && trusted.check(plain, family === 6 ? 'ipv6' : 'ipv4');
  };
  return (req) => {
    const hops = chain(req);
    for (const hop of hops) if (!isTrusted(hop)) return hop;
    return hops.at(-1) ?? '';
  };
}
