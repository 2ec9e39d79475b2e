/**
 * A small Okapi BM25 index over passages of page texts. Both validators use it:
 * the local one to decide, the Anthropic one to choose which passages fit in
 * a prompt. In-memory and synchronous; built per assessment.
 */
import { MAX_QUOTE_CHARS, type PageText } from './types.ts';

/** A short span of one page: a sentence, a bullet, or a slice of a long sentence. */
export interface Passage {
  document: string;
  page: number;
  /** Index of the source page in the array the index was built from. */
  pageIndex: number;
  /** Offsets of the span in the page's text; `text === pageText.slice(start, end)`. */
  start: number;
  end: number;
  /** The span verbatim, trimmed: usable as a quote as is. */
  text: string;
}

/** One search hit. */
export interface ScoredPassage {
  passage: Passage;
  /** Position of the passage in {@link Bm25Index.passages}. */
  index: number;
  score: number;
  /** The (stemmed) query terms the passage contains. */
  matched: string[];
}

/** BM25 parameters. */
export interface Bm25Options {
  /** Term-frequency saturation; 1.2 by default. */
  k1?: number;
  /** Length normalisation; 0.75 by default. */
  b?: number;
}

// Short on purpose: a long list starts eating words that matter in criteria
// ("first", "within", "between"...). Negation words are stop words here; the
// local validator looks for them in the raw text, not in tokens.
const STOP_WORDS = new Set(
  (
    'a an and are as at be been being but by can could did do does doing for from had has have having he her his ' +
    'i if in into is it its itself me my no nor not of on or our ours she so than that the their them then there ' +
    'these they this those to too was we were what when where which while who whom why will with would you your ' +
    'yours also any each other such some shall should must may might very just only own same both more most'
  ).split(' '),
);

/** Lower-cases, splits on anything but letters and digits, drops stop words, stems. */
export function tokenize(text: string): string[] {
  const out: string[] = [];
  for (const raw of words(text)) {
    if (STOP_WORDS.has(raw)) continue;
    const t = stem(raw);
    if (t.length > 0) out.push(t);
  }
  return out;
}

/** The lower-cased words of a text, in order, without stop-word removal or stemming. */
export function words(text: string): string[] {
  // Apostrophes are dropped rather than split on, so "doesn't" stays one word
  // ("doesnt") instead of leaving a stray "t".
  return (
    text
      .toLowerCase()
      .replace(/['’]/g, '')
      .match(/[\p{L}\p{N}]+/gu) ?? []
  );
}

/**
 * A naive suffix stemmer. It only has to be consistent (queries and passages go
 * through the same function), not linguistically right: "encrypted",
 * "encrypts", "encrypting", "encryption" and "encrypt" all become "encrypt".
 */
export function stem(word: string): string {
  let w = stemCache.get(word);
  if (w === undefined) {
    w = stemUncached(word);
    // Bounded: vocabularies are small, but a pathological input should not grow memory without end.
    if (stemCache.size >= 50_000) stemCache.clear();
    stemCache.set(word, w);
  }
  return w;
}

const stemCache = new Map<string, string>();

function stemUncached(word: string): string {
  let w = word;
  if (w.length <= 3 || /\d/.test(w)) return w;
  // Plurals and third person.
  if (w.endsWith('ies') && w.length > 4) w = `${w.slice(0, -3)}y`;
  else if (w.endsWith('sses')) w = w.slice(0, -2);
  else if (/(?:ch|sh|x|z)es$/.test(w)) w = w.slice(0, -2);
  else if (w.endsWith('s') && !/(?:ss|us|is)$/.test(w)) w = w.slice(0, -1);
  // Verb forms and -tion/-sion nouns, keeping a stem of at least 3 letters.
  if (w.endsWith('ing') && w.length > 5) w = undouble(w.slice(0, -3));
  else if (w.endsWith('ed') && w.length > 4) w = undouble(w.slice(0, -2));
  else if (/[ts]ion$/.test(w) && w.length > 5) w = w.slice(0, -3);
  // "authenticate" and "authenticat(ed)" meet here; so do "store" and "stor(ed)".
  if (w.endsWith('e') && w.length > 4) w = w.slice(0, -1);
  return w;
}

// "stopped" -> "stopp" -> "stop"; but "pass" and "fall" are left alone.
function undouble(w: string): string {
  return /([b-df-hj-np-rtv-z])\1$/.test(w) && !/(?:ll|ss|zz)$/.test(w) ? w.slice(0, -1) : w;
}

// Where a passage may end: after sentence punctuation (and closing quotes or
// brackets) followed by whitespace, at a blank line, or before a bullet line.
const BOUNDARY = /[.!?]+["'”’)\]]*(?=\s)|\n[ \t]*\n|\n(?=[ \t]*(?:[-–•*▪●◦]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s)/g;

/** Fragments with fewer content tokens than this (headings, "Page 3") join the next passage. */
const MIN_TOKENS = 4;

/**
 * Splits one page into passages of at most `maxChars` characters, each a
 * verbatim, trimmed span of the page text with its offsets.
 */
export function splitPassages(page: PageText, pageIndex = 0, maxChars = MAX_QUOTE_CHARS): Passage[] {
  const text = page.text;
  const spans: Array<[number, number]> = [];
  let from = 0;
  for (const m of text.matchAll(BOUNDARY)) {
    const end = m.index + m[0].length;
    spans.push([from, end]);
    from = end;
  }
  spans.push([from, text.length]);

  // Merge short fragments forward, as long as the merged span still fits.
  const merged: Array<[number, number]> = [];
  let pending: [number, number] | undefined;
  for (const span of spans) {
    const [s, e] = trimSpan(text, span[0], span[1]);
    if (s >= e) continue;
    if (pending) {
      if (e - pending[0] <= maxChars) {
        pending = [pending[0], e];
      } else {
        merged.push(pending);
        pending = [s, e];
      }
    } else {
      pending = [s, e];
    }
    if (tokenize(text.slice(pending[0], pending[1])).length >= MIN_TOKENS) {
      merged.push(pending);
      pending = undefined;
    }
  }
  if (pending) merged.push(pending);

  const out: Passage[] = [];
  for (const [s, e] of merged) {
    for (const [ws, we] of windows(text, s, e, maxChars)) {
      out.push({ document: page.document, page: page.page, pageIndex, start: ws, end: we, text: text.slice(ws, we) });
    }
  }
  return out;
}

function trimSpan(text: string, start: number, end: number): [number, number] {
  let s = start;
  let e = end;
  while (s < e && /\s/.test(text[s]!)) s++;
  while (e > s && /\s/.test(text[e - 1]!)) e--;
  return [s, e];
}

// Cuts an over-long span at whitespace into trimmed pieces of at most maxChars
// (hard cuts only for a single "word" longer than that).
function windows(text: string, start: number, end: number, maxChars: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let s = start;
  while (end - s > maxChars) {
    let cut = s + maxChars;
    while (cut > s && !/\s/.test(text[cut]!)) cut--;
    if (cut === s) cut = s + maxChars;
    const piece = trimSpan(text, s, cut);
    if (piece[0] < piece[1]) out.push(piece);
    s = trimSpan(text, cut, end)[0];
  }
  if (s < end) out.push(trimSpan(text, s, end));
  return out;
}

const cache = new WeakMap<readonly PageText[], { length: number; index: Bm25Index }>();

/** An Okapi BM25 index over passages. */
export class Bm25Index {
  readonly passages: readonly Passage[];
  private readonly k1: number;
  private readonly b: number;
  private readonly termFreqs: Array<Map<string, number>>;
  private readonly lengths: number[];
  private readonly avgLength: number;
  private readonly docFreq = new Map<string, number>();

  constructor(passages: readonly Passage[], opts: Bm25Options = {}) {
    this.passages = passages;
    this.k1 = opts.k1 ?? 1.2;
    this.b = opts.b ?? 0.75;
    this.termFreqs = [];
    this.lengths = [];
    let total = 0;
    for (const p of passages) {
      const tokens = tokenize(p.text);
      const tf = new Map<string, number>();
      for (const t of tokens) tf.set(t, (tf.get(t) ?? 0) + 1);
      for (const t of tf.keys()) this.docFreq.set(t, (this.docFreq.get(t) ?? 0) + 1);
      this.termFreqs.push(tf);
      this.lengths.push(tokens.length);
      total += tokens.length;
    }
    this.avgLength = passages.length > 0 ? total / passages.length : 0;
  }

  /** Splits every page into passages and indexes them. */
  static fromPages(pages: readonly PageText[], opts: Bm25Options & { maxChars?: number } = {}): Bm25Index {
    const passages = pages.flatMap((p, i) => splitPassages(p, i, opts.maxChars));
    return new Bm25Index(passages, opts);
  }

  /**
   * {@link fromPages} with default options, memoised per pages array: the
   * pipeline validates many criteria against the same pages, and indexing is
   * most of the local validator's work. Pages must not be edited in place
   * afterwards (appending is detected and rebuilds the index).
   */
  static forPages(pages: readonly PageText[]): Bm25Index {
    const hit = cache.get(pages);
    if (hit && hit.length === pages.length) return hit.index;
    const index = Bm25Index.fromPages(pages);
    cache.set(pages, { length: pages.length, index });
    return index;
  }

  /** Number of passages containing the (stemmed) term. */
  documentFrequency(term: string): number {
    return this.docFreq.get(term) ?? 0;
  }

  /** Whether passage `index` contains the (stemmed) term. */
  contains(index: number, term: string): boolean {
    return this.termFreqs[index]?.has(term) ?? false;
  }

  /**
   * Inverse document frequency, in the variant that never goes negative
   * (Lucene's): a term in most passages still counts a little.
   */
  idf(term: string): number {
    const n = this.documentFrequency(term);
    return Math.log(1 + (this.passages.length - n + 0.5) / (n + 0.5));
  }

  /**
   * The `limit` best passages for a query, best first; only passages sharing at
   * least one term with it. `query` is raw text or already stemmed terms.
   */
  search(query: string | readonly string[], limit = 10): ScoredPassage[] {
    const terms = [...new Set(typeof query === 'string' ? tokenize(query) : query)].filter((t) => this.docFreq.has(t));
    if (terms.length === 0 || limit <= 0) return [];
    const idfs = terms.map((t) => this.idf(t));
    const hits: ScoredPassage[] = [];
    for (let i = 0; i < this.passages.length; i++) {
      const tf = this.termFreqs[i]!;
      const norm = this.k1 * (1 - this.b + (this.b * this.lengths[i]!) / (this.avgLength || 1));
      let score = 0;
      const matched: string[] = [];
      for (let j = 0; j < terms.length; j++) {
        const f = tf.get(terms[j]!);
        if (!f) continue;
        score += (idfs[j]! * f * (this.k1 + 1)) / (f + norm);
        matched.push(terms[j]!);
      }
      if (score > 0) hits.push({ passage: this.passages[i]!, index: i, score, matched });
    }
    // Ties keep document order, so results are deterministic.
    hits.sort((x, y) => y.score - x.score || x.index - y.index);
    return hits.slice(0, limit);
  }
}
