import sjson from 'secure-json-parse';
import { RelayError } from '../errors.js';

// JSON from outside the relay (HTTP bodies, Redis ingest messages, client
// packets) passes through here: valid UTF-8, bounded depth, no property names
// that reach prototypes.

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeUtf8(buffer: Buffer): string {
  try {
    return utf8.decode(buffer);
  } catch {
    throw new RelayError('invalid_encoding');
  }
}

/**
 * Deepest nesting of arrays and objects in JSON text, stopping early past
 * `limit`. Runs before JSON.parse so a 10,000-deep body costs one linear scan.
 */
export function exceedsDepth(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) {
      inString = true;
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      depth--;
    }
  }
  return false;
}

export function parseJsonText(text: string, maxDepth: number): unknown {
  if (text.trim() === '') throw new RelayError('invalid_json', 'the body is empty');
  if (exceedsDepth(text, maxDepth)) {
    throw new RelayError('too_deep', `the body is nested deeper than ${maxDepth} levels`);
  }
  try {
    return sjson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (err) {
    const message = (err as Error).message;
    if (/prototype property/i.test(message)) throw new RelayError('forbidden_key');
    throw new RelayError('invalid_json', `the body is not valid JSON: ${message}`);
  }
}

/**
 * The same rules for a value that arrived already parsed (Socket.IO decodes
 * client packets itself). Iterative, so hostile nesting cannot overflow the stack.
 */
export function checkValue(value: unknown, maxDepth: number): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > maxDepth)
      throw new RelayError('too_deep', `the message is nested deeper than ${maxDepth} levels`);
    if (Array.isArray(v)) {
      for (const item of v) stack.push([item, depth + 1]);
    } else {
      for (const key of Object.keys(v)) {
        const child = (v as Record<string, unknown>)[key];
        if (isForbiddenKey(key, child)) throw new RelayError('forbidden_key');
        stack.push([child, depth + 1]);
      }
    }
  }
}

/** The keys secure-json-parse refuses: `__proto__`, and `constructor` holding a `prototype`. */
export function isForbiddenKey(key: string, value?: unknown): boolean {
  if (key === '__proto__') return true;
  return (
    key === 'constructor' &&
    typeof value === 'object' &&
    value !== null &&
    Object.hasOwn(value as object, 'prototype')
  );
}
