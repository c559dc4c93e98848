import type { LatencySummary } from './stats.js';

// What the harness and the load generator say to each other over IPC.

export interface SystemTarget {
  kind: 'pushrelay' | 'socketio';
  /** Socket.IO URLs; client i connects to urls[i % urls.length]. */
  urls: string[];
  /** Where every publish is sent. */
  publishUrl: string;
  /** Publisher secret (pushrelay). */
  secret?: string;
  /** HS256 secret client tokens are signed with (pushrelay). */
  jwtSecret?: string;
}

export interface PhaseArgs {
  shape: 'broadcast' | 'targeted' | 'batch';
  rate?: number;
  concurrency: number;
  durationMs: number;
  users: number;
  batchSize: number;
  window: number;
  drainMs: number;
  /** Return every latency sample (the paired phase pools its segments' samples). */
  samples?: boolean;
  /** Keep the previous phase's keep-alive HTTP connections (a segment continues the one before). */
  reuseConnections?: boolean;
}

export interface PhaseResult {
  /** HTTP requests sent, and how many were not answered 200. */
  requests: number;
  httpErrors: number;
  /** Messages the server accepted (a batch request carries several). */
  messages: number;
  /** Connected clients during the phase. */
  recipients: number;
  expected: number;
  /** Distinct (client, message) deliveries seen. */
  delivered: number;
  lost: number;
  duplicates: number;
  /** Messages that reached a client they were not meant for. */
  misrouted: number;
  /** Messages of an earlier phase that arrived late. */
  strays: number;
  /** Clients dropped by the server so far (cumulative). */
  disconnects: number;
  /** First send to last delivery. */
  elapsedMs: number;
  sendMs: number;
  /** End-to-end latency, ms, of every first delivery. */
  latency: LatencySummary;
  /** Every first delivery's latency, ms, when the phase asked for them. */
  samples?: number[];
}

export type LoadRequest =
  | { cmd: 'init'; target: SystemTarget; paddingBytes: number }
  | { cmd: 'connect'; from: number; to: number; batch: number }
  | { cmd: 'disconnect'; from: number; to: number }
  | { cmd: 'phase'; args: PhaseArgs }
  | { cmd: 'close' };

export type LoadCommand = LoadRequest & { id: number };

export interface LoadReply {
  id: number;
  result?: unknown;
  error?: string;
}
