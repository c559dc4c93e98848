import { createRequire } from 'node:module';
import WebSocket from 'ws';
import type { RelayServer, RelaySocket } from './events.js';

// One event to every local socket of some rooms, encoded once and, for a
// socket whose WebSocket has nothing queued, written straight to that
// WebSocket as one prebuilt frame. Socket.IO's own broadcast also encodes once
// and prebuilds the frame, then hands each socket a packet through socket.io's
// client and engine.io's socket: a packet object, a write buffer, a flush, the
// transport's writable flag and a completion callback per socket, a quarter of
// the CPU of a delivery. Written directly, the bytes and their order on the
// wire are the same: a socket with anything queued in engine.io (packets held
// while a send completes, a long-polling or upgrading transport) takes the
// packet through engine.io instead, behind what it queued. (A recovery's
// replay goes through engine.io and live messages may follow it directly:
// test/integration/recovery.test.ts fails if this check is dropped.)

/** Socket.IO's EVENT packet type (socket.io-parser's PacketType.EVENT). */
const EVENT = 2;
/** Engine.IO's "message" packet type, the first character of every Socket.IO packet on the wire. */
const MESSAGE = '4';
/**
 * ws's frame builder, the one socket.io-adapter prebuilds its broadcast frames with: on the
 * CommonJS export only (ws's ES module default is the bare class) and untyped in @types/ws.
 */
const { Sender } = createRequire(import.meta.url)('ws') as {
  Sender: { frame(data: Buffer, options: Record<string, boolean | number>): Buffer[] };
};
/** An unmasked, unfragmented text frame, as the server side sends. */
const TEXT_FRAME = { readOnly: false, mask: false, rsv1: false, opcode: 1, fin: true };

interface Transport {
  readonly name: string;
  /** The ws WebSocket of a WebSocket transport. */
  readonly socket?: {
    readonly readyState: number;
    readonly bufferedAmount: number;
    readonly _sender?: { sendFrame(list: Buffer[], cb?: () => void): void };
  };
}

interface EngineSocket {
  readonly readyState: string;
  readonly transport: Transport;
  readonly writeBuffer: unknown[];
  write(data: string, options: { wsPreEncodedFrame?: Buffer[] }): void;
}

/**
 * Emits `args` (event name first) to the sockets of this node in any of
 * `rooms`, except those in any of `except` (rooms, a socket's id being its own
 * room): what `io.local.to(rooms).except(except).emit(...args)` does.
 * `backlogged` hears of each socket a direct frame left bytes waiting in (the
 * kernel did not take it all): the slow-consumer watch's cue, as engine.io's
 * `packetCreate` is for everything else.
 */
export function fanOut(
  io: RelayServer,
  rooms: readonly string[],
  except: readonly string[],
  args: readonly unknown[],
  backlogged: (socket: RelaySocket) => void = () => {},
): void {
  const nsp = io.of('/');
  const all = nsp.adapter.rooms;
  const encoded = io.encoder.encode({ type: EVENT, data: args, nsp: '/' }) as unknown[];
  if (encoded.length !== 1 || typeof encoded[0] !== 'string') {
    // Binary attachments: never in a relayed message (JSON), but kept correct.
    nsp.local
      .to([...rooms])
      .except([...except])
      .emit(...(args as [string, ...unknown[]]));
    return;
  }
  const text = encoded[0];
  const frame = Sender.frame(Buffer.from(MESSAGE + text), TEXT_FRAME);
  const options = { wsPreEncodedFrame: frame };
  // Looked up per socket rather than merged into one set: an except room may be large (a protocol's room).
  const skip: ReadonlySet<string>[] = [];
  for (const room of except) {
    const ids = all.get(room);
    if (ids !== undefined) skip.push(ids);
  }
  const send = (socket: RelaySocket) => {
    const conn = socket.conn as unknown as EngineSocket;
    const { transport } = conn;
    const ws = transport.socket;
    const sender = ws?._sender;
    if (
      sender !== undefined &&
      ws!.readyState === WebSocket.OPEN &&
      // Nothing engine.io holds back: what it sent is already in the socket's stream (a send
      // whose completion is pending included), so this frame goes out after it.
      conn.writeBuffer.length === 0 &&
      conn.readyState === 'open' &&
      transport.name === 'websocket'
    ) {
      sender.sendFrame(frame);
      if (ws!.bufferedAmount > 0) backlogged(socket);
    } else {
      conn.write(text, options);
    }
  };
  const seen = rooms.length > 1 ? new Set<string>() : undefined;
  for (const room of rooms) {
    const ids = all.get(room);
    if (ids === undefined) continue;
    for (const id of ids) {
      if (seen?.has(id) || excluded(skip, id)) continue;
      seen?.add(id);
      const socket = nsp.sockets.get(id);
      if (socket !== undefined) send(socket);
    }
  }
}

function excluded(skip: readonly ReadonlySet<string>[], id: string): boolean {
  for (const ids of skip) if (ids.has(id)) return true;
  return false;
}
