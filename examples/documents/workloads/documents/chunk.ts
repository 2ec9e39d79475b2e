/** A piece of a page's text, the unit that is indexed and returned by search. */
export interface TextChunk {
  /** 1-based page the chunk comes from; chunks never span pages. */
  page: number;
  /** 0-based position of the chunk in the document. */
  index: number;
  text: string;
  words: number;
}

export interface ChunkOptions {
  /** Most words in one chunk. Default 250. */
  maxWords?: number;
  /** Words repeated from the end of one chunk at the start of the next on the same page. Default 40. */
  overlapWords?: number;
}

export const DEFAULT_CHUNK_WORDS = 250;
export const DEFAULT_CHUNK_OVERLAP = 40;

/**
 * Splits each page's text into chunks of at most `maxWords` words, consecutive
 * chunks of a page sharing `overlapWords` words so that a phrase cut at a
 * boundary is still found whole in one of them. A chunk keeps the original
 * whitespace (line breaks) between its words. Pages without text give none.
 */
export function chunkPages(pages: readonly { page: number; text: string }[], opts: ChunkOptions = {}): TextChunk[] {
  const maxWords = opts.maxWords ?? DEFAULT_CHUNK_WORDS;
  const overlap = opts.overlapWords ?? DEFAULT_CHUNK_OVERLAP;
  if (!Number.isInteger(maxWords) || maxWords < 1) throw new RangeError('maxWords must be a positive integer');
  if (!Number.isInteger(overlap) || overlap < 0 || overlap >= maxWords) throw new RangeError('overlapWords must be an integer in [0, maxWords)');
  const step = maxWords - overlap;
  const chunks: TextChunk[] = [];
  for (const { page, text } of pages) {
    const spans = [...text.matchAll(/\S+/g)].map((m) => [m.index, m.index + m[0].length] as const);
    for (let start = 0; start < spans.length; start += step) {
      const end = Math.min(spans.length, start + maxWords);
      chunks.push({ page, index: chunks.length, text: text.slice(spans[start]![0], spans[end - 1]![1]), words: end - start });
      // The last chunk reached the end: another would only repeat its tail.
      if (end === spans.length) break;
    }
  }
  return chunks;
}
