// Token buckets for the limits a node enforces on its own: handshakes per
// second, and client requests per socket. The state is two numbers, so it can
// live on every socket without a timer or an object per socket.

export interface BucketState {
  tokens: number;
  /** Milliseconds since the epoch of the last refill. */
  at: number;
}

export function fullBucket(burst: number, now = Date.now()): BucketState {
  return { tokens: burst, at: now };
}

/** Takes one token if there is one; `rate` tokens per second refill up to `burst`. */
export function take(state: BucketState, rate: number, burst: number, now = Date.now()): boolean {
  state.tokens = Math.min(burst, state.tokens + ((now - state.at) / 1000) * rate);
  state.at = now;
  if (state.tokens < 1) return false;
  state.tokens -= 1;
  return true;
}
