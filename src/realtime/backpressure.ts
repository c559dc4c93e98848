import type { Logger } from 'pino';
import type { Metrics } from '../metrics/index.js';
import type { RelayServer, RelaySocket } from './events.js';
import { disconnect } from './hub.js';

/** How often every socket's outgoing buffer is looked at. */
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
 * Returns a function that stops the watch.
 */
export function watchSlowConsumers(
  io: RelayServer,
  maxBytes: number,
  metrics: Metrics,
  log: Logger,
): () => void {
  const timer = setInterval(() => {
    for (const socket of io.of('/').sockets.values()) {
      const bytes = bufferedBytes(socket);
      if (bytes <= maxBytes) continue;
      log.warn(
        { user: socket.data.user, bytes, transport: socket.conn.transport.name },
        'slow consumer disconnected',
      );
      metrics.slowConsumers.inc();
      disconnect(socket, 'slow_consumer');
      // The notice cannot get through a full buffer; close now rather than after it drains.
      socket.conn.close(true);
    }
  }, SWEEP_MS);
  timer.unref();
  return () => clearInterval(timer);
}
