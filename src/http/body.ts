import { RelayError } from '../errors.js';
import { checkValue, decodeUtf8, exceedsDepth, parseJsonText } from '../ingest/json.js';
import type { HttpApp } from './types.js';

/** More fields than any publish needs; a flood of form fields stops here. */
export const MAX_FORM_FIELDS = 1000;

export type FormBody = Record<string, string | string[]>;

/**
 * The only two body types the relay reads. Both are parsed from the raw bytes
 * (kept for HMAC signatures), must be valid UTF-8, and pass the depth and
 * forbidden-key checks; anything else is 415.
 */
export function registerBodyParsers(app: HttpApp, maxJsonDepth: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    request.rawBody = body as Buffer;
    try {
      assertUtf8Charset(request.headers['content-type']);
      done(null, parseJsonText(decodeUtf8(body as Buffer), maxJsonDepth));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'buffer' },
    (request, body, done) => {
      request.rawBody = body as Buffer;
      request.isForm = true;
      try {
        const text = decodeUtf8(body as Buffer);
        // `curl -d '{...}'` sends JSON labelled as a form; form encoders escape { and [ (%7B, %5B),
        // so a body opening with one is JSON, and "missing the field event" would mislead.
        if (/^\s*[{[]/.test(text)) {
          throw new RelayError(
            'unsupported_media_type',
            'the body is JSON but its Content-Type is application/x-www-form-urlencoded (curl -d sends that): send Content-Type: application/json',
          );
        }
        done(null, parseForm(text));
      } catch (err) {
        done(err as Error, undefined);
      }
    },
  );
}

/**
 * Form fields into an object without a prototype. `name[]` and `name[0]`
 * (PHP's http_build_query) and repeated names (Ruby's post_form with an
 * array) all become arrays.
 */
export function parseForm(text: string): FormBody {
  const out: FormBody = Object.create(null);
  let count = 0;
  for (const [rawKey, value] of new URLSearchParams(text)) {
    if (++count > MAX_FORM_FIELDS)
      throw new RelayError('invalid_body', `more than ${MAX_FORM_FIELDS} form fields`);
    // PHP and Rack turn a[b][c] into nested objects; nothing here does, but a
    // key naming a prototype in any segment is refused outright.
    if (/(^|\[)(__proto__|constructor|prototype)(\[|\]|$)/.test(rawKey))
      throw new RelayError('forbidden_key');
    const m = /^([^[\]]+)\[\d*\]$/.exec(rawKey);
    const key = m ? m[1]! : rawKey;
    const prev = out[key];
    if (prev === undefined) out[key] = m ? [value] : value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[key] = [prev, value];
  }
  return out;
}

/** Bodies are read as UTF-8 (JSON is UTF-8 by RFC 8259); a body declaring another charset is refused, not misread. */
function assertUtf8Charset(contentType: string | undefined): void {
  const m = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(contentType ?? '');
  if (m && !/^utf-?8$/i.test(m[1]!)) {
    throw new RelayError('unsupported_media_type', `charset ${m[1]} is not supported: send UTF-8`);
  }
}

/** A form field's value as JSON when it is JSON (within the depth limit), otherwise as the string it is. */
export function jsonOrString(value: string, maxDepth: number): unknown {
  const t = value.trim();
  if (t === '' || !/^[[{"0-9tfn-]/.test(t)) return value;
  if (exceedsDepth(t, maxDepth))
    throw new RelayError('too_deep', `data is nested deeper than ${maxDepth} levels`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(t);
  } catch {
    return value;
  }
  checkValue(parsed, maxDepth);
  return parsed;
}
