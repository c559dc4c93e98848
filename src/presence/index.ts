import type { Logger } from 'pino';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import { MemoryPresence } from './memory.js';
import { RedisPresence } from './redis.js';
import type { LocalMembership, Presence } from './types.js';

export type { LocalMembership, NodeCounters, NodeInfo, Presence } from './types.js';

export type PresenceOptions =
  | { kind: 'memory'; nodeId: string; local: LocalMembership }
  | {
      kind: 'redis';
      nodeId: string;
      local: LocalMembership;
      redis: Redis;
      names: RedisNames;
      ttlSeconds: number;
      log: Logger;
    };

export function createPresence(options: PresenceOptions): Presence {
  switch (options.kind) {
    case 'memory':
      return new MemoryPresence(options.nodeId, options.local);
    case 'redis':
      return new RedisPresence(
        options.redis,
        options.names,
        options.nodeId,
        options.ttlSeconds,
        options.local,
        options.log,
      );
    default:
      throw new Error(`unknown presence kind: ${(options as { kind: string }).kind}`);
  }
}
