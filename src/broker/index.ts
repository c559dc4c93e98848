import type { Logger } from 'pino';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import type { DropReporter } from './dropped.js';
import { MemoryBroker } from './memory.js';
import { type Durability, RedisBroker } from './redis.js';
import type { Broker, Retention } from './types.js';

export { type DropReporter, dropReporter } from './dropped.js';
export type { Broker, ChannelTop, HistoryEntry, HistoryResult, PublishItem, Retention } from './types.js';

export type BrokerOptions =
  | { kind: 'memory'; retention: (channel: string) => Retention; idempotencyMs: number }
  | {
      kind: 'redis';
      retention: (channel: string) => Retention;
      idempotencyMs: number;
      command: Redis;
      subscriber: Redis;
      names: RedisNames;
      log: Logger;
      /** Replicas a publish must reach before it is fanned out and acknowledged. */
      durability?: Durability;
      /** Told about deliveries that are dropped as malformed. */
      dropped?: DropReporter;
    };

export function createBroker(options: BrokerOptions): Broker {
  switch (options.kind) {
    case 'memory':
      return new MemoryBroker(options.retention, options.idempotencyMs);
    case 'redis':
      return new RedisBroker(
        options.command,
        options.subscriber,
        options.names,
        options.retention,
        options.idempotencyMs,
        options.log,
        options.durability,
        options.dropped,
      );
    default:
      throw new Error(`unknown broker kind: ${(options as { kind: string }).kind}`);
  }
}
