import type { Logger } from 'pino';
import type { Metrics } from '../metrics/index.js';
import type { RelayServer, RelaySocket } from './events.js';
import { disconnect } from './hub.js';

/** How often the sockets with bytes waiting are looked at. */
const SWEEP_MS = 250;

interface EnginePacket {
  data?: string | Buffer | ArrayBuffer;
}

/**
 * Bytes written to a socket that have not reached the kernel yet: packets
 * engine.io holds while the transport is busy (a WebSocket whose previous
 * frames are not flushed, a long-polling client that has not polled), plus
 * what the WebSocket library buffers.
 */
export function bufferedBytes(socket: RelaySocket): number {
  const conn = socket.conn as unknown as {
    writeBuffer: EnginePacket[];
    transport: { socket?: { bufferedAmount?: number } };
  };
  let bytes = conn.transport.socket?.bufferedAmount ?? 0;
  for (const p of conn.writeBuffer) {
    const d = p.data;
    if (typeof d === 'string') bytes += d.length;
    else if (d) bytes += d.byteLength;
  }
  return bytes;
}

/**
 * A client that stops reading (a stalled tab, a dead mobile link) would make
 * the node hold every message for it. Past `maxBytes` the socket is told to
 * reconnect (`slow_consumer`) and its transport closed; the buffer is freed,
 * and the client recovers what it missed from history when it comes back.
 *
 * Only sockets that may have bytes waiting are looked at, so the cost follows
 * the traffic, not the number of connections (a sweep over every socket held
 * the event loop 0.3-0.8 ms per 1,000 sockets, four times a second). A socket
 * becomes a suspect when engine.io creates a packet for it (every path but the
 * hub's direct frames: Socket.IO emits, pings, long-polling, a busy transport)
 * or when a direct frame leaves bytes in its WebSocket (`noteBacklog`); it stops
 * being one once nothing of it is waiting, or when it is gone.
 */
export class SlowConsumerWatch {
  private readonly suspects = new Set<RelaySocket>();
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly onConnection = (socket: RelaySocket) => {
    socket.conn.on('packetCreate', () => this.suspects.add(socket));
  };

  constructor(
    private readonly io: RelayServer,
    private readonly maxBytes: number,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    io.on('connection', this.onConnection);
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  /** A frame written around engine.io left bytes in this socket's WebSocket. */
  readonly noteBacklog = (socket: RelaySocket): void => {
    this.suspects.add(socket);
  };

  stop(): void {
    clearInterval(this.timer);
    this.io.off('connection', this.onConnection);
    this.suspects.clear();
  }

  private sweep(): void {
    for (const socket of this.suspects) {
      if (!socket.connected) {
        this.suspects.delete(socket);
        continue;
      }
      const bytes = bufferedBytes(socket);
      if (bytes === 0) {
        this.suspects.delete(socket);
        continue;
      }
      if (bytes <= this.maxBytes) continue;
      this.suspects.delete(socket);
      this.log.warn(
        { user: socket.data.user, bytes, transport: socket.conn.transport.name },
        'slow consumer disconnected',
      );
      this.metrics.slowConsumers.inc();
      disconnect(socket, 'slow_consumer');
      // The notice cannot get through a full buffer; close now rather than after it drains.
      socket.conn.close(true);
    }
  }
}
