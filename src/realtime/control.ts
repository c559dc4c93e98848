import type { Logger } from 'pino';
import { RelayError } from '../errors.js';
import { userChannel } from '../ingest/message.js';
import type { RelayServer, RelaySocket, UserOperation } from './events.js';
import { clientChannels } from './handlers/subscribe.js';
import { disconnect, type Hub } from './hub.js';

/**
 * Acts on every socket of one user, on every node: logout and ban
 * (disconnect), and server-side subscribe / unsubscribe. The request travels
 * through the Socket.IO Redis adapter; each node applies it to its own
 * sockets and answers how many it reached.
 */
export class UserControl {
  constructor(
    private readonly io: RelayServer,
    private readonly hub: Hub,
    private readonly clustered: boolean,
    private readonly maxChannels: number,
    private readonly log: Logger,
  ) {
    io.on('pushrelay:user', (operation, ack) => {
      this.applyHere(operation).then(ack, (err: unknown) => {
        this.log.warn({ err, operation: operation.op }, 'user operation failed on this node');
        ack(0);
      });
    });
  }

  /** Sockets affected cluster-wide. */
  async apply(operation: UserOperation): Promise<number> {
    const here = this.applyHere(operation);
    if (!this.clustered) return here;
    let elsewhere: number[];
    try {
      // Bounded by the cluster adapter's own request timeout (five seconds).
      elsewhere = await this.io.serverSideEmitWithAck('pushrelay:user', operation);
    } catch {
      throw new RelayError(
        'unavailable',
        'not every node answered; the operation may be partly applied: retry it',
        1,
      );
    }
    return (await here) + elsewhere.reduce((a, b) => a + b, 0);
  }

  private async applyHere(operation: UserOperation): Promise<number> {
    const sockets = this.socketsOf(operation.user);
    switch (operation.op) {
      case 'disconnect':
        for (const s of sockets) disconnect(s, 'kicked');
        return sockets.length;
      case 'subscribe': {
        let reached = 0;
        for (const s of sockets) {
          const current = clientChannels(s).length;
          const adding = operation.channels.filter((c) => !s.rooms.has(c)).length;
          if (current + adding > this.maxChannels) continue;
          s.data.serverChannels ??= new Set();
          for (const c of operation.channels) s.data.serverChannels.add(c);
          await Promise.all(operation.channels.map((c) => this.hub.attach(s, c)));
          reached++;
        }
        return reached;
      }
      case 'unsubscribe':
        for (const s of sockets) {
          for (const c of operation.channels) {
            s.data.serverChannels?.delete(c);
            this.hub.detach(s, c);
          }
        }
        return sockets.length;
      default:
        return 0;
    }
  }

  private socketsOf(user: string): RelaySocket[] {
    const nsp = this.io.of('/');
    const ids = nsp.adapter.rooms.get(userChannel(user)) ?? new Set<string>();
    return [...ids].map((id) => nsp.sockets.get(id)).filter((s): s is RelaySocket => s !== undefined);
  }
}
