/* pktlisten: count every frame on one interface through an AF_PACKET socket (recv, not
 * PACKET_MMAP). Because the packet tap then holds a second reference to each received skb,
 * packet_rcv clones it (skb_shared), which is what the multicast procedure needs.
 * Usage: pktlisten IFNAME. On SIGTERM or SIGINT prints "pktlisten: packets=N bytes=M", exits 0. */
#include "sys.h"

static char buf[65536];

int main(int argc, char **argv)
{
	const char *me = "pktlisten";
	if (argc != 2 || str_len(argv[1]) >= 16) {
		out_str("usage: pktlisten IFNAME");
		out_line(2);
		return 2;
	}
	int sigfd = stop_signals(me);
	long fd = sys(NR_socket, AF_PACKET, SOCK_RAW, htons(ETH_P_ALL), 0, 0, 0);
	if (fd < 0)
		die(me, "socket(AF_PACKET)", fd);
	/* A large receive buffer, so the listener keeps up with line rate (root may force it). */
	int rcvbuf = 8 << 20;
	if (sys(NR_setsockopt, fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf), 0) < 0)
		sys(NR_setsockopt, fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf), 0);
	struct ifreq ifr = {0};
	memcpy(ifr.name, argv[1], str_len(argv[1]));
	long r = sys(NR_ioctl, fd, SIOCGIFINDEX, &ifr, 0, 0, 0);
	if (r < 0)
		die(me, "no such interface", r);
	struct sockaddr_ll sll = {.family = AF_PACKET, .protocol = htons(ETH_P_ALL), .ifindex = ifr.u.ifindex};
	r = sys(NR_bind, fd, &sll, sizeof(sll), 0, 0, 0);
	if (r < 0)
		die(me, "bind", r);
	out_str("pktlisten: listening on ");
	out_str(argv[1]);
	out_line(1);
	long long packets = 0, bytes = 0;
	while (wait_readable(me, (int)fd, sigfd)) {
		long n = sys(NR_recvfrom, fd, buf, sizeof(buf), 0, 0, 0);
		if (n == -EINTR || n == -EAGAIN || n == -ENETDOWN)
			continue; /* ENETDOWN: the link went down and up (an MTU change); keep counting */
		if (n < 0)
			die(me, "recv", n);
		packets++;
		bytes += n;
	}
	out_str("pktlisten: packets=");
	out_num(packets);
	out_str(" bytes=");
	out_num(bytes);
	out_line(1);
	return 0;
}
