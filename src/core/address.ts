// Address maths for IPv4 egress: parsing and classifying source IPs and subnets (ip-cidr does
// the CIDR parsing; the comparisons are done on 32-bit integers).
import { isIPv4, isIPv6 } from 'node:net';
import IPCIDR from 'ip-cidr';

export type Cidr = {
	/** Canonical text: network address and prefix, e.g. 172.18.0.0/16. */
	text: string;
	prefix: number;
	start: number;
	end: number;
};

export function ipv4ToInt(ip: string): number {
	return ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}

export function intToIpv4(n: number): string {
	return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** Parses an IPv4 CIDR; undefined when it is not one. Host bits are kept in `given`. */
/**
 * Parsing through ip-cidr (big integers) costs ~0.1 ms; reconciles parse the same few subnets and
 * ranges for every network and container, so answers are kept (bounded; values are frozen).
 */
const parsed4 = new Map<string, Readonly<Cidr & { hostBitsSet: boolean }> | undefined>();
const parsed6 = new Map<string, Readonly<Cidr6> | undefined>();
const MEMO_LIMIT = 10_000;

function memo<T>(cache: Map<string, T>, key: string, compute: () => T): T {
	if (cache.has(key)) {
		return cache.get(key)!;
	}

	if (cache.size >= MEMO_LIMIT) {
		cache.clear();
	}

	const value = compute();
	cache.set(key, value === undefined ? value : (Object.freeze(value) as T));
	return value;
}

export function parseIpv4Cidr(text: string): Readonly<Cidr & { hostBitsSet: boolean }> | undefined {
	return memo(parsed4, text, () => parseIpv4CidrUncached(text));
}

function parseIpv4CidrUncached(text: string): (Cidr & { hostBitsSet: boolean }) | undefined {
	const [address, prefixText] = text.split('/');
	if (address === undefined || prefixText === undefined || !/^\d{1,2}$/.test(prefixText) || !isIPv4(address)) {
		return undefined;
	}

	if (!IPCIDR.isValidCIDR(text)) {
		return undefined;
	}

	const cidr = new IPCIDR(text);
	const prefix = Number(prefixText);
	const start = ipv4ToInt(cidr.start<string>());
	const end = ipv4ToInt(cidr.end<string>());
	return {
		text: `${intToIpv4(start)}/${prefix}`,
		prefix,
		start,
		end,
		hostBitsSet: ipv4ToInt(address) !== start,
	};
}

export function cidrContains(cidr: Cidr, ip: string): boolean {
	const n = ipv4ToInt(ip);
	return n >= cidr.start && n <= cidr.end;
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
	return a.start <= b.end && b.start <= a.end;
}

export type AddressFamily = 'ipv4' | 'ipv6';

export function addressFamily(text: string): AddressFamily | undefined {
	if (isIPv4(text)) {
		return 'ipv4';
	}

	if (isIPv6(text)) {
		return 'ipv6';
	}

	return undefined;
}

/**
 * Why an IPv4 address can never be an egress source, or undefined when it can be one.
 * (Whether the host has it is checked separately, against the host's addresses.)
 */
export function unusableIpv4Reason(ip: string): string | undefined {
	const n = ipv4ToInt(ip);
	const inRange = (cidr: string) => {
		const range = parseIpv4Cidr(cidr)!;
		return n >= range.start && n <= range.end;
	};

	if (n === 0) {
		return 'is the unspecified address';
	}

	if (inRange('127.0.0.0/8')) {
		return 'is a loopback address';
	}

	if (inRange('224.0.0.0/4')) {
		return 'is a multicast address';
	}

	if (n === 0xff_ff_ff_ff) {
		return 'is the broadcast address';
	}

	if (inRange('0.0.0.0/8') || inRange('240.0.0.0/4')) {
		return 'is a reserved address';
	}

	return undefined;
}

export type Cidr6 = {
	/** Canonical (compressed) text, e.g. 2001:db8:1::/64. */
	text: string;
	prefix: number;
	start: bigint;
	end: bigint;
	hostBitsSet: boolean;
};

/** Parses an IPv6 CIDR; undefined when it is not one. */
export function parseIpv6Cidr(text: string): Readonly<Cidr6> | undefined {
	return memo(parsed6, text, () => parseIpv6CidrUncached(text));
}

function parseIpv6CidrUncached(text: string): Cidr6 | undefined {
	const [address, prefixText] = text.split('/');
	// The ':' test first: net.isIPv6 compiles a very large regular expression on first use
	// (~8 ms), which an IPv4 subnet, the common case, should not pay for.
	if (address === undefined || prefixText === undefined || !address.includes(':') || !/^\d{1,3}$/.test(prefixText) || !isIPv6(address) || Number(prefixText) > 128) {
		return undefined;
	}

	if (!IPCIDR.isValidCIDR(text)) {
		return undefined;
	}

	const cidr = new IPCIDR(text);
	const start = cidr.start<bigint>({ type: 'bigInteger' });
	const end = cidr.end<bigint>({ type: 'bigInteger' });
	const startText = cidr.start<{ correctForm(): string }>({ type: 'addressObject' }).correctForm();
	return { text: `${startText}/${prefixText}`, prefix: Number(prefixText), start, end, hostBitsSet: ipv6ToBigInt(address) !== start };
}

export function ipv6ToBigInt(ip: string): bigint {
	return new IPCIDR(`${ip}/128`).start<bigint>({ type: 'bigInteger' });
}

export function canonicalIpv6(ip: string): string {
	return IPCIDR.createAddress(ip).correctForm();
}

export function cidr6Contains(cidr: Cidr6, ip: string): boolean {
	const n = ipv6ToBigInt(ip);
	return n >= cidr.start && n <= cidr.end;
}

export function cidrs6Overlap(a: Cidr6, b: Cidr6): boolean {
	return a.start <= b.end && b.start <= a.end;
}

/** Why an IPv6 address can never be an egress source, or undefined when it can be one. */
export function unusableIpv6Reason(ip: string): string | undefined {
	const inRange = (cidr: string) => cidr6Contains(parseIpv6Cidr(cidr)!, ip);
	if (inRange('::/128')) {
		return 'is the unspecified address';
	}

	if (inRange('::1/128')) {
		return 'is the loopback address';
	}

	if (inRange('ff00::/8')) {
		return 'is a multicast address';
	}

	if (inRange('fe80::/10')) {
		return 'is a link-local address (it cannot be routed off the link)';
	}

	if (inRange('::ffff:0:0/96')) {
		return 'is an IPv4-mapped address';
	}

	return undefined;
}
