/*
 * Marvell Armada 3700 NETA (mvneta) Ethernet controller model
 *
 * Part of ppkit (github.com/ppkit/ppkit, mvneta-emu/).  The specification is
 * what the Linux 5.10 mvneta driver (drivers/net/ethernet/marvell/mvneta.c)
 * relies on, for the armada-3700 variant with software buffer management:
 *
 *  - 8 RX and 8 TX descriptor rings of 32-byte descriptors, driven by counter
 *    registers (RXQ occupied/non-occupied, TXQ pending/sent);
 *  - RX writes the 2-byte Marvell header, the frame and a 4-byte FCS at
 *    buf_phys_addr, spanning FIRST..LAST descriptors of the configured buffer
 *    size; checksum-OK bits are set when the IPv4 and TCP/UDP sums verify;
 *  - TX gathers FIRST..LAST descriptors and performs the requested IPv4 header
 *    and TCP/UDP (IPv4 and IPv6) checksum insertion;
 *  - one level-triggered interrupt: NEW_CAUSE is derived from the queue
 *    counters (the driver never acknowledges it) and masked by NEW_MASK;
 *  - RX coalescing by frame count and by time;
 *  - DA filtering: unicast MAC + unicast table, promiscuous mode, broadcast,
 *    special (01:00:5e:00:00:xx) and CRC-8 indexed multicast tables;
 *  - read-to-clear MIB counters; a fixed 1000/full link in GMAC_STATUS.
 *
 * Every other register is plain storage.  Guest mistakes are logged with
 * LOG_GUEST_ERROR and never stop the emulator.
 *
 * DMA goes through the "dma-memory" link property (the board sets it; virt
 * links the system memory) and reaches RAM only; a refused access latches
 * INTERNAL_ADDR_ERR in the misc cause.  The mvneta_* trace events report
 * register accesses, frames received, held, ignored, dropped and sent, DMA
 * errors, interrupt updates and link changes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "hw/irq.h"
#include "hw/qdev-properties.h"
#include "hw/net/mvneta.h"
#include "migration/vmstate.h"
#include "net/checksum.h"
#include "net/eth.h"
#include "sysemu/dma.h"
#include "trace.h"
#include <zlib.h>

/* Registers (byte offsets) */
#define REG_RXQ_CONFIG(q)       (0x1400 + (q) * 4)
#define REG_RXQ_BASE(q)         (0x1480 + (q) * 4)
#define REG_RXQ_SIZE(q)         (0x14a0 + (q) * 4)
#define REG_RXQ_THRESHOLD(q)    (0x14c0 + (q) * 4)
#define REG_RXQ_STATUS(q)       (0x14e0 + (q) * 4)
#define REG_RXQ_STATUS_UPDATE(q) (0x1500 + (q) * 4)
#define REG_PORT_RX_RESET       0x1cc0
#define REG_PORT_CONFIG         0x2400
#define REG_MAC_ADDR_LOW        0x2414
#define REG_MAC_ADDR_HIGH       0x2418
#define REG_PORT_STATUS         0x2444
#define REG_TXQ_CMD             0x2448
#define REG_RX_DISCARD          0x2484
#define REG_RX_OVERRUN          0x2488
#define REG_RXQ_TIME_COAL(q)    (0x2580 + (q) * 4)
#define REG_INTR_NEW_CAUSE      0x25a0
#define REG_INTR_NEW_MASK       0x25a4
#define REG_INTR_OLD_CAUSE      0x25a8
#define REG_INTR_MISC_CAUSE     0x25b0
#define REG_INTR_MISC_MASK      0x25b4
#define REG_RXQ_CMD             0x2680
#define REG_GMAC_CTRL_0         0x2c00
#define REG_GMAC_CTRL_2         0x2c08
#define REG_GMAC_AUTONEG        0x2c0c
#define REG_GMAC_STATUS         0x2c10
#define REG_MIB_BASE            0x3000
#define REG_MIB_END             0x3080
#define REG_DA_SPEC_MCAST       0x3400
#define REG_DA_OTH_MCAST        0x3500
#define REG_DA_UCAST            0x3600
#define REG_TXQ_BASE(q)         (0x3c00 + (q) * 4)
#define REG_TXQ_SIZE(q)         (0x3c20 + (q) * 4)
#define REG_TXQ_STATUS(q)       (0x3c40 + (q) * 4)
#define REG_TXQ_UPDATE(q)       (0x3c60 + (q) * 4)
#define REG_PORT_TX_RESET       0x3cf0

#define RING_SIZE_MASK          0x3fff
#define RXQ_BUF_SIZE_SHIFT      19
#define RXQ_BUF_SIZE(v)         (((v) >> RXQ_BUF_SIZE_SHIFT) * MVNETA_RX_BUF_UNIT)
#define RXQ_PKT_OFFSET(v)       ((((v) >> 8) & 0xf) * MVNETA_RX_BUF_UNIT)
#define RXQ_STATUS_FREE_SHIFT   16                      /* [29:16] */
#define TXQ_STATUS_SENT_SHIFT   16                      /* [29:16] */
#define RXQ_UPDATE_DONE(v)      ((v) & 0xff)            /* descriptors returned */
#define RXQ_UPDATE_ADD(v)       (((v) >> 16) & 0xff)    /* buffers added */
#define TXQ_SENT_THRESH(v)      (((v) >> 16) & RING_SIZE_MASK)
#define TXQ_UPDATE_PENDING(v)   ((v) & 0xff)            /* descriptors added */
#define TXQ_UPDATE_DEC_SENT(v)  (((v) >> 16) & 0xff)    /* sent ones released */
#define Q_CMD_ENABLE(v)         ((v) & 0xff)            /* TXQ_CMD, RXQ_CMD */
#define Q_CMD_DISABLE(v)        (((v) >> 8) & 0xff)
#define PORT_RESET_QUEUES       BIT(0)                  /* PORT_RX/TX_RESET */
#define PORT_CONFIG_UPM         BIT(0)
#define PORT_CONFIG_DEF_RXQ(v)  (((v) >> 1) & 7)
#define PORT_STATUS_FIFO_EMPTY  BIT(8)
#define GMAC0_PORT_ENABLE       BIT(0)
#define GMAC2_PORT_RESET        BIT(6)
#define GMAC_AN_FORCE_LINK_DOWN BIT(0)
#define GMAC_STAT_LINK_UP       BIT(0)
#define GMAC_STAT_SPEED_1000    BIT(1)
#define GMAC_STAT_FULL_DUPLEX   BIT(3)
#define GMAC_STAT_AN_COMPLETE   BIT(11)
#define GMAC_STAT_SYNC_OK       BIT(14)
#define NEW_CAUSE_TXQ(q)        BIT(q)
#define NEW_CAUSE_RXQ(q)        BIT(8 + (q))
#define NEW_CAUSE_MISC          BIT(31)
#define MISC_CAUSE_LINK_CHANGE  BIT(1)
/* The DMA engine met an address nothing answers (no RAM behind it). */
#define MISC_CAUSE_INTERNAL_ADDR_ERR BIT(7)

/* Descriptors: 32 bytes, little-endian */
#define DESC_SIZE               32
#define TXD_L3_OFFSET(cmd)      ((cmd) & 0x7f)          /* bytes */
#define TXD_IP_HLEN(cmd)        ((((cmd) >> 8) & 0x1f) * 4)
#define TXD_UDP                 BIT(16)
#define TXD_IP6                 BIT(17)
#define TXD_IP_CSUM             BIT(18)
#define TXD_Z_PAD               BIT(19)
#define TXD_LAST                BIT(20)
#define TXD_FIRST               BIT(21)
#define TXD_L4_CSUM_FULL        BIT(30)
#define TXD_L4_CSUM_NOT         BIT(31)
#define RXD_ERR_SUMMARY         BIT(16)
#define RXD_ERR_RESOURCE        (BIT(17) | BIT(18))
#define RXD_L3_IP4              BIT(25)
#define RXD_LAST                BIT(26)
#define RXD_FIRST               BIT(27)
#define RXD_L4_CSUM_OK          BIT(30)

#define MIN_FRAME               60      /* frames are padded to this, FCS excluded */

/*
 * MIB counters: byte offsets from REG_MIB_BASE, the names of the driver's
 * ethtool statistics.  The two 64-bit counters are read low word first; the
 * read latches the high word for the next read.
 */
#define MIB_GOOD_OCTETS_RCVD    0x00    /* 64-bit */
#define MIB_GOOD_OCTETS_RCVD_HI 0x04
#define MIB_GOOD_FRAMES_RCVD    0x10
#define MIB_BROADCAST_RCVD      0x18
#define MIB_MULTICAST_RCVD      0x1c
#define MIB_FRAMES_64           0x20
#define MIB_FRAMES_65_127       0x24
#define MIB_FRAMES_128_255      0x28
#define MIB_FRAMES_256_511      0x2c
#define MIB_FRAMES_512_1023     0x30
#define MIB_FRAMES_1024_MAX     0x34
#define MIB_GOOD_OCTETS_SENT    0x38    /* 64-bit */
#define MIB_GOOD_OCTETS_SENT_HI 0x3c
#define MIB_GOOD_FRAMES_SENT    0x40
#define MIB_MULTICAST_SENT      0x48
#define MIB_BROADCAST_SENT      0x4c
#define MIB_OVERSIZE_RCVD       0x68
#define MIB(s, off)             ((s)->mib[(off) / 4])

#define REG(s, off)             ((s)->regs[(off) >> 2])

#define mvneta_guest_error(fmt, ...) \
    qemu_log_mask(LOG_GUEST_ERROR, "mvneta: " fmt "\n", ## __VA_ARGS__)

static uint32_t mvneta_ring_size(MvnetaState *s, hwaddr size_reg)
{
    return REG(s, size_reg) & RING_SIZE_MASK;
}

static bool mvneta_port_enabled(MvnetaState *s)
{
    return REG(s, REG_GMAC_CTRL_0) & GMAC0_PORT_ENABLE;
}

static bool mvneta_link_up(MvnetaState *s)
{
    return !qemu_get_queue(s->nic)->link_down &&
           !(REG(s, REG_GMAC_AUTONEG) & GMAC_AN_FORCE_LINK_DOWN);
}

static uint32_t mvneta_new_cause(MvnetaState *s)
{
    uint32_t cause = 0;
    int q;

    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        MvnetaTxQueue *txq = &s->txq[q];
        MvnetaRxQueue *rxq = &s->rxq[q];
        uint32_t tx_thresh = TXQ_SENT_THRESH(REG(s, REG_TXQ_SIZE(q)));
        uint32_t rx_coal = REG(s, REG_RXQ_THRESHOLD(q)) & RING_SIZE_MASK;

        if (txq->sent && txq->sent >= MAX(tx_thresh, 1)) {
            cause |= NEW_CAUSE_TXQ(q);
        }
        if (rxq->occupied &&
            (rxq->occupied >= rx_coal || rxq->time_fired)) {
            cause |= NEW_CAUSE_RXQ(q);
        }
    }
    if (s->misc_cause & REG(s, REG_INTR_MISC_MASK)) {
        cause |= NEW_CAUSE_MISC;
    }
    return cause;
}

static void mvneta_update_irq(MvnetaState *s)
{
    uint32_t cause = mvneta_new_cause(s);
    uint32_t mask = REG(s, REG_INTR_NEW_MASK);

    trace_mvneta_irq(cause, mask, (cause & mask) != 0);
    qemu_set_irq(s->irq, (cause & mask) != 0);
}

/* ---- DMA --------------------------------------------------------------- */

/*
 * The device DMAs to and from RAM only.  A descriptor or buffer address
 * anywhere else in its address space (the "dma-memory" link) — the flash,
 * another device's registers, its own — would turn frame data into device
 * accesses (the virt flash takes it for commands and rebuilds the memory map
 * for every frame), so such an access is refused before anything is read or
 * written.
 */
static bool mvneta_dma_is_ram(MvnetaState *s, hwaddr addr, hwaddr len,
                              bool is_write)
{
    RCU_READ_LOCK_GUARD();

    while (len) {
        hwaddr xlat, l = len;
        MemoryRegion *mr = address_space_translate(&s->dma_as, addr,
                                                   &xlat, &l, is_write,
                                                   MEMTXATTRS_UNSPECIFIED);

        if (!l || !memory_region_is_ram(mr) ||
            (is_write && memory_region_is_rom(mr))) {
            return false;
        }
        addr += l;
        len -= l;
    }
    return true;
}

/*
 * A DMA access the device could not make: the hardware latches "internal
 * address error" in the misc cause (an interrupt if the driver unmasked it);
 * the model also logs a guest error and a trace event.  dir is "RXQ" or
 * "TXQ", what "descriptor" or "buffer of descriptor".
 */
static void mvneta_dma_error(MvnetaState *s, const char *dir, int q,
                             const char *what, uint32_t index, hwaddr addr,
                             uint32_t len)
{
    trace_mvneta_dma_error(dir, q, what, index, addr, len);
    mvneta_guest_error("%s%d %s %u at 0x%" HWADDR_PRIx " (%u bytes) is not "
                       "in RAM", dir, q, what, index, addr, len);
    s->misc_cause |= MISC_CAUSE_INTERNAL_ADDR_ERR;
    mvneta_update_irq(s);
}

static bool mvneta_dma_read(MvnetaState *s, const char *dir, int q,
                            const char *what, uint32_t index, hwaddr addr,
                            void *buf, uint32_t len)
{
    if (!mvneta_dma_is_ram(s, addr, len, false) ||
        dma_memory_read(&s->dma_as, addr, buf, len,
                        MEMTXATTRS_UNSPECIFIED) != MEMTX_OK) {
        mvneta_dma_error(s, dir, q, what, index, addr, len);
        return false;
    }
    return true;
}

/* RX writes: their addresses were checked with mvneta_dma_is_ram before. */
static bool mvneta_dma_write(MvnetaState *s, int q, const char *what,
                             uint32_t index, hwaddr addr, const void *buf,
                             uint32_t len)
{
    if (dma_memory_write(&s->dma_as, addr, buf, len,
                         MEMTXATTRS_UNSPECIFIED) != MEMTX_OK) {
        mvneta_dma_error(s, "RXQ", q, what, index, addr, len);
        return false;
    }
    return true;
}

/* ---- RX ---------------------------------------------------------------- */

static void mvneta_rx_reset_queue(MvnetaState *s, int q)
{
    MvnetaRxQueue *rxq = &s->rxq[q];

    rxq->occupied = 0;
    rxq->non_occupied = 0;
    rxq->index = 0;
    rxq->time_fired = false;
    timer_del(rxq->coal_timer);
}

static void mvneta_rx_coal_timer_cb(void *opaque)
{
    MvnetaState *s = opaque;
    int q;

    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        MvnetaRxQueue *rxq = &s->rxq[q];
        if (rxq->occupied && !timer_pending(rxq->coal_timer) &&
            !rxq->time_fired) {
            trace_mvneta_rx_coal_timer(q, rxq->occupied);
            rxq->time_fired = true;
        }
    }
    mvneta_update_irq(s);
}

static void mvneta_rx_arm_coal_timer(MvnetaState *s, int q)
{
    MvnetaRxQueue *rxq = &s->rxq[q];
    uint64_t cycles = REG(s, REG_RXQ_TIME_COAL(q));
    uint64_t ns;

    if (rxq->time_fired || timer_pending(rxq->coal_timer)) {
        return;
    }
    if (!cycles || !s->clock_frequency) {
        rxq->time_fired = true;
        return;
    }
    ns = muldiv64(cycles, NANOSECONDS_PER_SECOND, s->clock_frequency);
    timer_mod(rxq->coal_timer,
              qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + ns);
}

static int mvneta_rx_queue_for(MvnetaState *s, const uint8_t *da)
{
    uint32_t port_config = REG(s, REG_PORT_CONFIG);
    int def_q = PORT_CONFIG_DEF_RXQ(port_config);
    uint8_t entry;

    if (is_broadcast_ether_addr(da)) {
        return def_q;
    }
    if (is_multicast_ether_addr(da)) {
        static const uint8_t special[5] = { 0x01, 0x00, 0x5e, 0x00, 0x00 };
        if (memcmp(da, special, 5) == 0) {
            entry = REG(s, REG_DA_SPEC_MCAST + (da[5] & ~3)) >>
                    (8 * (da[5] & 3));
        } else {
            int crc = 0, i, j;

            /* CRC-8 (x^8 + x^2 + x + 1) over the address, as the driver */
            for (i = 0; i < ETH_ALEN; i++) {
                crc = (crc ^ da[i]) << 8;
                for (j = 7; j >= 0; j--) {
                    if (crc & (0x100 << j)) {
                        crc ^= 0x107 << j;
                    }
                }
            }
            entry = REG(s, REG_DA_OTH_MCAST + (crc & ~3)) >> (8 * (crc & 3));
        }
        return (entry & 1) ? (entry >> 1) & 7 : -1;
    }
    if (port_config & PORT_CONFIG_UPM) {
        return def_q;
    }
    {
        uint32_t high = REG(s, REG_MAC_ADDR_HIGH);
        uint32_t low = REG(s, REG_MAC_ADDR_LOW);
        int nib = da[5] & 0xf;

        if (da[0] != (high >> 24 & 0xff) || da[1] != (high >> 16 & 0xff) ||
            da[2] != (high >> 8 & 0xff) || da[3] != (high & 0xff) ||
            da[4] != (low >> 8 & 0xff) || (da[5] >> 4) != (low >> 4 & 0xf)) {
            return -1;
        }
        entry = REG(s, REG_DA_UCAST + (nib & ~3)) >> (8 * (nib & 3));
        return (entry & 1) ? (entry >> 1) & 7 : -1;
    }
}

/* Status bits for the FIRST descriptor: L3/L4 checksum verdicts. */
static uint32_t mvneta_rx_csum_status(const uint8_t *buf, size_t len)
{
    size_t l3 = ETH_HLEN;
    uint16_t type;
    uint8_t *ip;
    unsigned ihl, tot, proto;
    uint32_t status = 0;

    if (len < ETH_HLEN + 20) {
        return 0;
    }
    type = lduw_be_p(buf + 12);
    if (type == ETH_P_VLAN && len >= ETH_HLEN + 4 + 20) {
        type = lduw_be_p(buf + 16);
        l3 += 4;
    }
    if (type != ETH_P_IP) {
        return 0;
    }
    ip = (uint8_t *)buf + l3;
    ihl = (ip[0] & 0xf) * 4;
    tot = lduw_be_p(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || l3 + tot > len) {
        return 0;
    }
    if (net_raw_checksum(ip, ihl) != 0) {
        return 0;
    }
    status |= RXD_L3_IP4;
    if (lduw_be_p(ip + 6) & 0x3fff) {
        return status;          /* fragment: no L4 verdict */
    }
    proto = ip[9];
    if (proto == IP_PROTO_UDP && tot - ihl >= 8 &&
        lduw_be_p(ip + ihl + 6) == 0) {
        return status | RXD_L4_CSUM_OK;
    }
    if ((proto == IP_PROTO_TCP && tot - ihl >= 20) ||
        (proto == IP_PROTO_UDP && tot - ihl >= 8)) {
        if (net_checksum_tcpudp(tot - ihl, proto, ip + 12, ip + ihl) == 0) {
            status |= RXD_L4_CSUM_OK;
        }
    }
    return status;
}

static void mvneta_mib_count_rx(MvnetaState *s, const uint8_t *buf, size_t len)
{
    size_t wire = len + MVNETA_FCS_SIZE;

    MIB(s, MIB_GOOD_OCTETS_RCVD) += wire;
    MIB(s, MIB_GOOD_FRAMES_RCVD)++;
    if (is_broadcast_ether_addr(buf)) {
        MIB(s, MIB_BROADCAST_RCVD)++;
    } else if (is_multicast_ether_addr(buf)) {
        MIB(s, MIB_MULTICAST_RCVD)++;
    }
    if (wire <= 64) {
        MIB(s, MIB_FRAMES_64)++;
    } else if (wire <= 127) {
        MIB(s, MIB_FRAMES_65_127)++;
    } else if (wire <= 255) {
        MIB(s, MIB_FRAMES_128_255)++;
    } else if (wire <= 511) {
        MIB(s, MIB_FRAMES_256_511)++;
    } else if (wire <= 1023) {
        MIB(s, MIB_FRAMES_512_1023)++;
    } else {
        MIB(s, MIB_FRAMES_1024_MAX)++;
    }
}

static bool mvneta_can_receive(NetClientState *nc)
{
    MvnetaState *s = qemu_get_nic_opaque(nc);
    int q = PORT_CONFIG_DEF_RXQ(REG(s, REG_PORT_CONFIG));

    if (!mvneta_port_enabled(s) || !(s->rxq_enabled & BIT(q))) {
        return true;            /* frames are dropped, as on the wire */
    }
    if (!s->rxq[q].non_occupied) {
        /* QEMU holds frames until RXQ_STATUS_UPDATE adds buffers */
        trace_mvneta_rx_no_buffers(q);
        return false;
    }
    return true;
}

/* A frame the port does not store: counted as a discard, traced. */
static ssize_t mvneta_rx_discard(MvnetaState *s, int q, size_t size,
                                 const char *reason)
{
    trace_mvneta_rx_drop(q, size, reason);
    s->rx_discard++;
    return size;
}

static ssize_t mvneta_receive(NetClientState *nc, const uint8_t *buf,
                              size_t size)
{
    MvnetaState *s = qemu_get_nic_opaque(nc);
    MvnetaRxQueue *rxq;
    uint32_t ring, buf_size, offset, status, base, ndesc, total, done, idx, i;
    size_t len = size;
    uint8_t *frame = s->rx_frame;
    bool stored = true;
    uint32_t crc;
    int q;

    if (!mvneta_port_enabled(s)) {
        trace_mvneta_rx_ignore(size, "port disabled");
        return size;
    }
    if (!mvneta_link_up(s)) {
        trace_mvneta_rx_ignore(size, "link down");
        return size;
    }
    if (size < ETH_HLEN) {
        trace_mvneta_rx_ignore(size, "shorter than an Ethernet header");
        return size;
    }
    if (size > MVNETA_MAX_FRAME) {
        trace_mvneta_rx_ignore(size, "oversize");
        MIB(s, MIB_OVERSIZE_RCVD)++;
        return size;
    }
    q = mvneta_rx_queue_for(s, buf);
    if (q < 0) {
        trace_mvneta_rx_ignore(size, "destination address filtered out");
        return size;
    }
    if (!(s->rxq_enabled & BIT(q))) {
        return mvneta_rx_discard(s, q, size, "queue disabled");
    }
    rxq = &s->rxq[q];
    ring = mvneta_ring_size(s, REG_RXQ_SIZE(q));
    buf_size = RXQ_BUF_SIZE(REG(s, REG_RXQ_SIZE(q)));
    offset = RXQ_PKT_OFFSET(REG(s, REG_RXQ_CONFIG(q)));
    base = REG(s, REG_RXQ_BASE(q));
    if (ring == 0 || buf_size <= offset) {
        mvneta_guest_error("RXQ%d enabled with ring size %u, buffer size %u: "
                           "frame dropped", q, ring, buf_size);
        return mvneta_rx_discard(s, q, size, "ring or buffer size 0");
    }
    buf_size -= offset;

    /* Marvell header, frame padded to the minimum, FCS */
    memset(frame, 0, MVNETA_MH_SIZE);
    memcpy(frame + MVNETA_MH_SIZE, buf, len);
    if (len < MIN_FRAME) {
        memset(frame + MVNETA_MH_SIZE + len, 0, MIN_FRAME - len);
        len = MIN_FRAME;
    }
    crc = cpu_to_le32(crc32(0, frame + MVNETA_MH_SIZE, len));
    memcpy(frame + MVNETA_MH_SIZE + len, &crc, MVNETA_FCS_SIZE);
    total = MVNETA_MH_SIZE + len + MVNETA_FCS_SIZE;

    ndesc = DIV_ROUND_UP(total, buf_size);
    if (ndesc > ring) {
        mvneta_guest_error("RXQ%d: a %zu-byte frame needs %u buffers, the "
                           "ring has %u", q, size, ndesc, ring);
        return mvneta_rx_discard(s, q, size, "frame longer than the ring");
    }
    if (ndesc > rxq->non_occupied) {
        if (q == PORT_CONFIG_DEF_RXQ(REG(s, REG_PORT_CONFIG))) {
            /* QEMU holds it until buffers are returned */
            trace_mvneta_rx_hold(q, size, ndesc, rxq->non_occupied);
            return 0;
        }
        return mvneta_rx_discard(s, q, size, "no free descriptors");
    }

    status = mvneta_rx_csum_status(frame + MVNETA_MH_SIZE, len);
    /* Check every buffer first: a frame is written whole or not at all. */
    if (ndesc > ARRAY_SIZE(s->rx_bufs)) {
        mvneta_guest_error("RXQ%d: %u-byte buffers are too small for a "
                           "%zu-byte frame", q, buf_size, size);
        return mvneta_rx_discard(s, q, size, "buffers too small");
    }
    for (i = 0, idx = rxq->index % ring; i < ndesc; i++, idx = (idx + 1) % ring) {
        hwaddr desc = (hwaddr)base + (hwaddr)idx * DESC_SIZE;
        uint32_t b, chunk;

        if (!mvneta_dma_is_ram(s, desc, DESC_SIZE, true) ||
            dma_memory_read(&s->dma_as, desc + 8, &b, sizeof(b),
                            MEMTXATTRS_UNSPECIFIED) != MEMTX_OK) {
            mvneta_dma_error(s, "RXQ", q, "descriptor", idx, desc, DESC_SIZE);
            return mvneta_rx_discard(s, q, size, "descriptor not in RAM");
        }
        b = le32_to_cpu(b);
        if (b == 0) {
            mvneta_guest_error("RXQ%d descriptor %u is counted as free but "
                               "has no buffer (buf_phys_addr 0): frame "
                               "dropped", q, idx);
            return mvneta_rx_discard(s, q, size, "free descriptor without a "
                                     "buffer");
        }
        chunk = MIN(buf_size, total - i * buf_size);
        if (!mvneta_dma_is_ram(s, (hwaddr)b + offset, chunk, true)) {
            mvneta_dma_error(s, "RXQ", q, "buffer of descriptor", idx,
                             (hwaddr)b + offset, chunk);
            return mvneta_rx_discard(s, q, size, "buffer not in RAM");
        }
        s->rx_bufs[i] = b;
    }

    /*
     * Data first, then the descriptors: a buffer that cannot be written after
     * all (checked above, so only if the memory map changed under the device)
     * marks the frame with a resource error, as the hardware reports a frame
     * it could not store; the driver drops it and reuses the buffers.
     */
    for (i = 0, done = 0, idx = rxq->index % ring; done < total;
         i++, idx = (idx + 1) % ring) {
        uint32_t chunk = MIN(buf_size, total - done);

        stored &= mvneta_dma_write(s, q, "buffer of descriptor", idx,
                                   (hwaddr)s->rx_bufs[i] + offset,
                                   frame + done, chunk);
        done += chunk;
    }
    if (!stored) {
        status = RXD_ERR_SUMMARY | RXD_ERR_RESOURCE;
    }

    idx = rxq->index % ring;
    for (i = 0, done = 0; done < total; i++) {
        hwaddr desc = (hwaddr)base + (hwaddr)idx * DESC_SIZE;
        uint32_t chunk = MIN(buf_size, total - done);
        uint32_t d_status = 0;
        uint16_t d_size;
        uint8_t head[8];

        if (done == 0) {
            d_status |= RXD_FIRST | status;
            d_size = total;
        } else {
            d_size = chunk;
        }
        done += chunk;
        if (done == total) {
            d_status |= RXD_LAST;
        }
        stl_le_p(head, d_status);
        stw_le_p(head + 4, 0);
        stw_le_p(head + 6, d_size);
        /* A lost status write leaves the driver a stale descriptor. */
        mvneta_dma_write(s, q, "descriptor", idx, desc, head, sizeof(head));
        idx = (idx + 1) % ring;
        rxq->non_occupied--;
        rxq->occupied++;
    }
    trace_mvneta_rx_frame(q, size, ndesc, rxq->index % ring, status);
    rxq->index = idx;
    rxq->occupied = MIN(rxq->occupied, RING_SIZE_MASK);
    if (stored) {
        mvneta_mib_count_rx(s, buf, len);
    }

    mvneta_rx_arm_coal_timer(s, q);
    mvneta_update_irq(s);
    return size;
}

/* ---- TX ---------------------------------------------------------------- */

static void mvneta_tx_checksum(uint8_t *frame, size_t len, uint32_t cmd)
{
    size_t l3 = TXD_L3_OFFSET(cmd);
    size_t hlen = TXD_IP_HLEN(cmd);
    size_t l4 = l3 + hlen;
    bool udp = cmd & TXD_UDP;
    bool ip6 = cmd & TXD_IP6;
    size_t l4_len, csum_off = udp ? 6 : 16;
    uint32_t sum;
    uint16_t csum;
    uint8_t pseudo[8];

    if (hlen < 20 || l4 > len) {
        mvneta_guest_error("TX checksum request with L3 offset %zu, IP header "
                           "%zu on a %zu-byte frame", l3, hlen, len);
        trace_mvneta_tx_csum_error(l3, hlen, len);
        return;
    }
    if ((cmd & TXD_IP_CSUM) && !ip6) {
        stw_be_p(frame + l3 + 10, 0);
        stw_be_p(frame + l3 + 10, net_raw_checksum(frame + l3, hlen));
    }
    if (!(cmd & TXD_L4_CSUM_FULL) || (cmd & TXD_L4_CSUM_NOT)) {
        return;
    }
    if (ip6) {
        l4_len = lduw_be_p(frame + l3 + 4) + 40 - hlen;
    } else {
        l4_len = lduw_be_p(frame + l3 + 2) - hlen;
    }
    if (l4 + l4_len > len || l4_len < csum_off + 2) {
        l4_len = len - l4;
        if (l4_len < csum_off + 2) {
            return;
        }
    }
    stw_be_p(frame + l4 + csum_off, 0);
    if (ip6) {
        sum = net_checksum_add_cont(32, frame + l3 + 8, 0);
    } else {
        sum = net_checksum_add_cont(8, frame + l3 + 12, 0);
    }
    stl_be_p(pseudo, l4_len);
    stl_be_p(pseudo + 4, udp ? IP_PROTO_UDP : IP_PROTO_TCP);
    sum += net_checksum_add_cont(8, pseudo, 0);
    sum += net_checksum_add_cont(l4_len, frame + l4, 0);
    csum = net_checksum_finish(sum);
    if (udp && csum == 0) {
        csum = 0xffff;
    }
    stw_be_p(frame + l4 + csum_off, csum);
}

static void mvneta_mib_count_tx(MvnetaState *s, const uint8_t *buf, size_t len)
{
    MIB(s, MIB_GOOD_OCTETS_SENT) += len + MVNETA_FCS_SIZE;
    MIB(s, MIB_GOOD_FRAMES_SENT)++;
    if (is_broadcast_ether_addr(buf)) {
        MIB(s, MIB_BROADCAST_SENT)++;
    } else if (is_multicast_ether_addr(buf)) {
        MIB(s, MIB_MULTICAST_SENT)++;
    }
}

static void mvneta_tx_queue(MvnetaState *s, int q)
{
    MvnetaTxQueue *txq = &s->txq[q];
    uint32_t ring = mvneta_ring_size(s, REG_TXQ_SIZE(q));
    uint32_t base = REG(s, REG_TXQ_BASE(q));
    uint32_t sent_before = txq->sent;

    if (!mvneta_port_enabled(s) || !(s->txq_enabled & BIT(q))) {
        return;
    }
    if (ring == 0) {
        if (txq->pending) {
            mvneta_guest_error("TXQ%d has %u pending descriptors and ring "
                               "size 0", q, txq->pending);
            trace_mvneta_tx_drop(q, txq->index, "ring size 0");
            txq->pending = 0;
        }
        return;
    }

    while (txq->pending) {
        uint32_t n, idx = txq->index % ring, cmd = 0;
        size_t len = 0;
        bool complete = false, bad = false;
        uint8_t *frame = s->tx_frame;

        /* Gather FIRST..LAST; stop if LAST is not pending yet. */
        for (n = 0; n < txq->pending; n++) {
            hwaddr desc = (hwaddr)base +
                          (hwaddr)((idx + n) % ring) * DESC_SIZE;
            uint8_t d[16];
            uint32_t d_cmd, d_buf;
            uint16_t d_len;

            if (!mvneta_dma_read(s, "TXQ", q, "descriptor", (idx + n) % ring,
                                 desc, d, sizeof(d))) {
                trace_mvneta_tx_drop(q, idx, "descriptor not in RAM");
                bad = true;
                n++;
                break;
            }
            d_cmd = ldl_le_p(d);
            d_len = lduw_le_p(d + 6);
            d_buf = ldl_le_p(d + 8);
            if (n == 0) {
                if (!(d_cmd & TXD_FIRST)) {
                    mvneta_guest_error("TXQ%d descriptor %u lacks FIRST; "
                                       "skipped", q, idx);
                    trace_mvneta_tx_drop(q, idx, "no FIRST");
                    bad = true;
                    n++;
                    break;
                }
                cmd = d_cmd;
            } else if (d_cmd & TXD_FIRST) {
                mvneta_guest_error("TXQ%d frame at descriptor %u has no LAST; "
                                   "dropped", q, idx);
                trace_mvneta_tx_drop(q, idx, "no LAST");
                bad = true;
                break;          /* the new FIRST starts the next frame */
            }
            if (!bad && len + d_len > MVNETA_MAX_FRAME) {
                mvneta_guest_error("TXQ%d frame longer than %d bytes; "
                                   "dropped", q, MVNETA_MAX_FRAME);
                trace_mvneta_tx_drop(q, idx, "oversize");
                bad = true;
            }
            if (!bad && d_len &&
                !mvneta_dma_read(s, "TXQ", q, "buffer of descriptor",
                                 (idx + n) % ring, d_buf, frame + len, d_len)) {
                trace_mvneta_tx_drop(q, idx, "buffer not in RAM");
                bad = true;
            }
            if (!bad) {
                len += d_len;
            }
            if (d_cmd & TXD_LAST) {
                complete = true;
                n++;
                break;
            }
        }
        if (!complete && !bad) {
            if (n >= ring) {
                mvneta_guest_error("TXQ%d: no LAST descriptor in the whole "
                                   "ring", q);
                trace_mvneta_tx_drop(q, idx, "no LAST in the ring");
                n = txq->pending;
                bad = true;
            } else {
                break;          /* wait for the rest of the frame */
            }
        }
        if (complete && !bad) {
            if (cmd & (TXD_IP_CSUM | TXD_L4_CSUM_FULL)) {
                mvneta_tx_checksum(frame, len, cmd);
            }
            if (len < MIN_FRAME) {
                memset(frame + len, 0, MIN_FRAME - len);
                len = MIN_FRAME;
            }
            if (len >= ETH_HLEN) {
                mvneta_mib_count_tx(s, frame, len);
                trace_mvneta_tx_frame(q, len, n, idx, cmd);
                if (mvneta_link_up(s)) {
                    qemu_send_packet(qemu_get_queue(s->nic), frame, len);
                } else {
                    trace_mvneta_tx_drop(q, idx, "link down");
                }
            }
        }
        txq->index = (idx + n) % ring;
        txq->pending -= n;
        txq->sent = MIN(txq->sent + n, RING_SIZE_MASK);
    }
    if (txq->sent != sent_before) {
        mvneta_update_irq(s);
    }
}

static void mvneta_tx_all(MvnetaState *s)
{
    int q;

    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        if (s->txq[q].pending) {
            mvneta_tx_queue(s, q);
        }
    }
}

/* ---- Registers --------------------------------------------------------- */

static void mvneta_flush_rx(MvnetaState *s)
{
    if (mvneta_can_receive(qemu_get_queue(s->nic))) {
        qemu_flush_queued_packets(qemu_get_queue(s->nic));
    }
}

/* MIB counters are read-to-clear; off is the offset from REG_MIB_BASE. */
static uint32_t mvneta_mib_read(MvnetaState *s, hwaddr off)
{
    uint32_t val;
    int latch;

    switch (off) {
    case MIB_GOOD_OCTETS_RCVD:
    case MIB_GOOD_OCTETS_SENT:
        /* 64-bit: the low word; the high word waits in its latch */
        latch = off == MIB_GOOD_OCTETS_SENT;
        val = MIB(s, off);
        s->mib_high_latch[latch] = MIB(s, off) >> 32;
        MIB(s, off) = 0;
        return val;
    case MIB_GOOD_OCTETS_RCVD_HI:
    case MIB_GOOD_OCTETS_SENT_HI:
        latch = off == MIB_GOOD_OCTETS_SENT_HI;
        val = s->mib_high_latch[latch];
        s->mib_high_latch[latch] = 0;
        return val;
    default:
        val = MIB(s, off);
        MIB(s, off) = 0;
        return val;
    }
}

static uint32_t mvneta_reg_read(MvnetaState *s, hwaddr addr)
{
    uint32_t val;
    int q;

    switch (addr) {
    case REG_RXQ_STATUS(0) ... REG_RXQ_STATUS(7):
        q = (addr - REG_RXQ_STATUS(0)) / 4;
        return s->rxq[q].occupied |
               (s->rxq[q].non_occupied << RXQ_STATUS_FREE_SHIFT);
    case REG_RXQ_STATUS_UPDATE(0) ... REG_RXQ_STATUS_UPDATE(7):
    case REG_TXQ_UPDATE(0) ... REG_TXQ_UPDATE(7):
        return 0;               /* write-only */
    case REG_TXQ_STATUS(0) ... REG_TXQ_STATUS(7):
        q = (addr - REG_TXQ_STATUS(0)) / 4;
        return (s->txq[q].sent << TXQ_STATUS_SENT_SHIFT) |
               (s->txq[q].pending & RING_SIZE_MASK);
    case REG_PORT_STATUS:
        return PORT_STATUS_FIFO_EMPTY;
    case REG_TXQ_CMD:
        return s->txq_enabled;
    case REG_RXQ_CMD:
        return s->rxq_enabled;
    case REG_INTR_NEW_CAUSE:
        return mvneta_new_cause(s);
    case REG_INTR_MISC_CAUSE:
        return s->misc_cause;
    case REG_GMAC_CTRL_2:
        return REG(s, addr) & ~GMAC2_PORT_RESET;
    case REG_GMAC_STATUS:
        val = GMAC_STAT_SPEED_1000 | GMAC_STAT_FULL_DUPLEX |
              GMAC_STAT_AN_COMPLETE | GMAC_STAT_SYNC_OK;
        if (mvneta_link_up(s)) {
            val |= GMAC_STAT_LINK_UP;
        }
        return val;
    case REG_RX_DISCARD:
        val = s->rx_discard;
        s->rx_discard = 0;
        return val;
    case REG_RX_OVERRUN:
        val = s->rx_overrun;
        s->rx_overrun = 0;
        return val;
    case REG_MIB_BASE ... REG_MIB_END - 1:
        return mvneta_mib_read(s, addr - REG_MIB_BASE);
    default:
        trace_mvneta_reg_storage_read(addr, REG(s, addr));
        return REG(s, addr);
    }
}

static uint64_t mvneta_read(void *opaque, hwaddr addr, unsigned size)
{
    MvnetaState *s = opaque;
    uint32_t val = mvneta_reg_read(s, addr);

    trace_mvneta_reg_read(addr, val);
    return val;
}

static void mvneta_write(void *opaque, hwaddr addr, uint64_t val64,
                         unsigned size)
{
    MvnetaState *s = opaque;
    uint32_t val = val64;
    uint32_t ring, n;
    int q;

    trace_mvneta_reg_write(addr, val);
    switch (addr) {
    case REG_RXQ_BASE(0) ... REG_RXQ_BASE(7):
        q = (addr - REG_RXQ_BASE(0)) / 4;
        REG(s, addr) = val;
        mvneta_rx_reset_queue(s, q);
        mvneta_update_irq(s);
        break;
    case REG_RXQ_SIZE(0) ... REG_RXQ_SIZE(7):
        q = (addr - REG_RXQ_SIZE(0)) / 4;
        REG(s, addr) = val;
        ring = val & RING_SIZE_MASK;
        if (ring == 0 && val != 0) {
            mvneta_guest_error("RXQ%d size register 0x%x: ring size 0 "
                               "(valid 1..16383)", q, val);
            trace_mvneta_queue_error("RXQ", q, "ring size 0", val, 0);
        }
        break;
    case REG_RXQ_STATUS_UPDATE(0) ... REG_RXQ_STATUS_UPDATE(7): {
        MvnetaRxQueue *rxq;
        uint32_t done = RXQ_UPDATE_DONE(val), add = RXQ_UPDATE_ADD(val);

        q = (addr - REG_RXQ_STATUS_UPDATE(0)) / 4;
        rxq = &s->rxq[q];
        ring = mvneta_ring_size(s, REG_RXQ_SIZE(q));
        if (done > rxq->occupied) {
            mvneta_guest_error("RXQ%d: %u descriptors returned, only %u "
                               "occupied", q, done, rxq->occupied);
            trace_mvneta_queue_error("RXQ", q, "returned more than occupied",
                                     done, rxq->occupied);
            done = rxq->occupied;
        }
        rxq->occupied -= done;
        rxq->non_occupied += add;
        if (rxq->occupied + rxq->non_occupied > ring) {
            mvneta_guest_error("RXQ%d: %u occupied + %u free descriptors "
                               "exceed the ring size %u",
                               q, rxq->occupied, rxq->non_occupied, ring);
            trace_mvneta_queue_error("RXQ", q, "more descriptors than the ring",
                                     rxq->occupied + rxq->non_occupied, ring);
            rxq->non_occupied = ring > rxq->occupied ?
                                ring - rxq->occupied : 0;
        }
        if (rxq->occupied == 0) {
            rxq->time_fired = false;
            timer_del(rxq->coal_timer);
        }
        mvneta_update_irq(s);
        if (add) {
            mvneta_flush_rx(s);
        }
        break;
    }
    case REG_RXQ_THRESHOLD(0) ... REG_RXQ_THRESHOLD(7):
        REG(s, addr) = val;
        mvneta_update_irq(s);
        break;
    case REG_RXQ_STATUS(0) ... REG_RXQ_STATUS(7):
    case REG_TXQ_STATUS(0) ... REG_TXQ_STATUS(7):
    case REG_PORT_STATUS:
    case REG_GMAC_STATUS:
    case REG_MIB_BASE ... REG_MIB_END - 1:
    case REG_RX_DISCARD:
    case REG_RX_OVERRUN:
        mvneta_guest_error("write 0x%x to read-only register 0x%" HWADDR_PRIx,
                           val, addr);
        trace_mvneta_reg_readonly_write(addr, val);
        break;
    case REG_PORT_RX_RESET:
        REG(s, addr) = val;
        if (val & PORT_RESET_QUEUES) {
            for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
                mvneta_rx_reset_queue(s, q);
            }
            mvneta_update_irq(s);
        }
        break;
    case REG_PORT_TX_RESET:
        REG(s, addr) = val;
        if (val & PORT_RESET_QUEUES) {
            for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
                s->txq[q].pending = 0;
                s->txq[q].sent = 0;
                s->txq[q].index = 0;
            }
            mvneta_update_irq(s);
        }
        break;
    case REG_TXQ_BASE(0) ... REG_TXQ_BASE(7):
        q = (addr - REG_TXQ_BASE(0)) / 4;
        REG(s, addr) = val;
        s->txq[q].pending = 0;
        s->txq[q].sent = 0;
        s->txq[q].index = 0;
        mvneta_update_irq(s);
        break;
    case REG_TXQ_SIZE(0) ... REG_TXQ_SIZE(7):
        REG(s, addr) = val;
        mvneta_update_irq(s);
        break;
    case REG_TXQ_UPDATE(0) ... REG_TXQ_UPDATE(7): {
        MvnetaTxQueue *txq;
        uint32_t dec = TXQ_UPDATE_DEC_SENT(val);

        q = (addr - REG_TXQ_UPDATE(0)) / 4;
        txq = &s->txq[q];
        ring = mvneta_ring_size(s, REG_TXQ_SIZE(q));
        if (dec) {
            if (dec > txq->sent) {
                mvneta_guest_error("TXQ%d: %u sent descriptors released, "
                                   "only %u sent", q, dec, txq->sent);
                trace_mvneta_queue_error("TXQ", q, "released more than sent",
                                         dec, txq->sent);
                dec = txq->sent;
            }
            txq->sent -= dec;
        }
        n = TXQ_UPDATE_PENDING(val);
        if (n) {
            if (txq->pending + n + txq->sent > ring) {
                mvneta_guest_error("TXQ%d: %u pending + %u sent descriptors "
                                   "exceed the ring size %u",
                                   q, txq->pending + n, txq->sent, ring);
                trace_mvneta_queue_error("TXQ", q,
                                         "more descriptors than the ring",
                                         txq->pending + n + txq->sent, ring);
                n = ring > txq->pending + txq->sent ?
                    ring - txq->pending - txq->sent : 0;
            }
            txq->pending += n;
            mvneta_tx_queue(s, q);
        }
        mvneta_update_irq(s);
        break;
    }
    case REG_TXQ_CMD:
        s->txq_enabled = (s->txq_enabled | Q_CMD_ENABLE(val)) &
                         ~Q_CMD_DISABLE(val);
        mvneta_tx_all(s);
        break;
    case REG_RXQ_CMD:
        s->rxq_enabled = (s->rxq_enabled | Q_CMD_ENABLE(val)) &
                         ~Q_CMD_DISABLE(val);
        mvneta_flush_rx(s);
        break;
    case REG_INTR_NEW_CAUSE:
    case REG_INTR_OLD_CAUSE:
        /* Level-derived from the queue counters; writes have no effect. */
        break;
    case REG_INTR_NEW_MASK:
    case REG_INTR_MISC_MASK:
        REG(s, addr) = val;
        mvneta_update_irq(s);
        break;
    case REG_INTR_MISC_CAUSE:
        s->misc_cause &= val;
        mvneta_update_irq(s);
        break;
    case REG_RXQ_TIME_COAL(0) ... REG_RXQ_TIME_COAL(7):
        REG(s, addr) = val;
        break;
    case REG_GMAC_CTRL_0:
        REG(s, addr) = val;
        mvneta_tx_all(s);
        mvneta_flush_rx(s);
        break;
    case REG_GMAC_AUTONEG:
        REG(s, addr) = val;
        mvneta_flush_rx(s);
        break;
    default:
        trace_mvneta_reg_storage_write(addr, val);
        REG(s, addr) = val;
        break;
    }
}

static const MemoryRegionOps mvneta_ops = {
    .read = mvneta_read,
    .write = mvneta_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 4,
        .max_access_size = 4,
    },
    .impl.min_access_size = 4,
    .impl.max_access_size = 4,
};

/* ---- Device ------------------------------------------------------------ */

static void mvneta_set_link(NetClientState *nc)
{
    MvnetaState *s = qemu_get_nic_opaque(nc);

    trace_mvneta_link_change(!nc->link_down);
    s->misc_cause |= MISC_CAUSE_LINK_CHANGE;
    mvneta_update_irq(s);
}

static NetClientInfo net_mvneta_info = {
    .type = NET_CLIENT_DRIVER_NIC,
    .size = sizeof(NICState),
    .can_receive = mvneta_can_receive,
    .receive = mvneta_receive,
    .link_status_changed = mvneta_set_link,
};

static void mvneta_reset(DeviceState *dev)
{
    MvnetaState *s = MVNETA(dev);
    const uint8_t *mac = s->conf.macaddr.a;
    int q;

    trace_mvneta_reset();
    memset(s->regs, 0, sizeof(s->regs));
    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        mvneta_rx_reset_queue(s, q);
        s->txq[q].pending = 0;
        s->txq[q].sent = 0;
        s->txq[q].index = 0;
    }
    s->rxq_enabled = 0;
    s->txq_enabled = 0;
    s->misc_cause = 0;
    memset(s->mib, 0, sizeof(s->mib));
    memset(s->mib_high_latch, 0, sizeof(s->mib_high_latch));
    s->rx_discard = 0;
    s->rx_overrun = 0;
    /* The MAC a boot loader would leave behind (the driver may use it). */
    REG(s, REG_MAC_ADDR_HIGH) = mac[0] << 24 | mac[1] << 16 | mac[2] << 8 |
                                mac[3];
    REG(s, REG_MAC_ADDR_LOW) = mac[4] << 8 | mac[5];
    qemu_set_irq(s->irq, 0);
}

static void mvneta_init(Object *obj)
{
    MvnetaState *s = MVNETA(obj);
    SysBusDevice *sbd = SYS_BUS_DEVICE(obj);

    memory_region_init_io(&s->iomem, obj, &mvneta_ops, s, TYPE_MVNETA,
                          MVNETA_MMIO_SIZE);
    sysbus_init_mmio(sbd, &s->iomem);
    sysbus_init_irq(sbd, &s->irq);
}

static void mvneta_realize(DeviceState *dev, Error **errp)
{
    MvnetaState *s = MVNETA(dev);
    int q;

    if (!s->dma_mr) {
        error_setg(errp, TYPE_MVNETA " 'dma-memory' link not set");
        return;
    }
    address_space_init(&s->dma_as, s->dma_mr, "mvneta-dma");
    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        s->rxq[q].coal_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL,
                                            mvneta_rx_coal_timer_cb, s);
    }
    qemu_macaddr_default_if_unset(&s->conf.macaddr);
    s->nic = qemu_new_nic(&net_mvneta_info, &s->conf,
                          object_get_typename(OBJECT(dev)), dev->id,
                          &dev->mem_reentrancy_guard, s);
    qemu_format_nic_info_str(qemu_get_queue(s->nic), s->conf.macaddr.a);
}

static void mvneta_unrealize(DeviceState *dev)
{
    MvnetaState *s = MVNETA(dev);
    int q;

    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        timer_free(s->rxq[q].coal_timer);
    }
    qemu_del_nic(s->nic);
    address_space_destroy(&s->dma_as);
}

static int mvneta_post_load(void *opaque, int version_id)
{
    MvnetaState *s = opaque;
    int q;

    for (q = 0; q < MVNETA_NUM_QUEUES; q++) {
        if (s->rxq[q].occupied && !s->rxq[q].time_fired) {
            mvneta_rx_arm_coal_timer(s, q);
        }
    }
    mvneta_update_irq(s);
    return 0;
}

static const VMStateDescription vmstate_mvneta_rxq = {
    .name = "mvneta-rxq",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (VMStateField[]) {
        VMSTATE_UINT32(occupied, MvnetaRxQueue),
        VMSTATE_UINT32(non_occupied, MvnetaRxQueue),
        VMSTATE_UINT32(index, MvnetaRxQueue),
        VMSTATE_BOOL(time_fired, MvnetaRxQueue),
        VMSTATE_END_OF_LIST()
    }
};

static const VMStateDescription vmstate_mvneta_txq = {
    .name = "mvneta-txq",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (VMStateField[]) {
        VMSTATE_UINT32(pending, MvnetaTxQueue),
        VMSTATE_UINT32(sent, MvnetaTxQueue),
        VMSTATE_UINT32(index, MvnetaTxQueue),
        VMSTATE_END_OF_LIST()
    }
};

static const VMStateDescription vmstate_mvneta = {
    .name = TYPE_MVNETA,
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = mvneta_post_load,
    .fields = (VMStateField[]) {
        VMSTATE_UINT32_ARRAY(regs, MvnetaState, MVNETA_NUM_REGS),
        VMSTATE_STRUCT_ARRAY(rxq, MvnetaState, MVNETA_NUM_QUEUES, 1,
                             vmstate_mvneta_rxq, MvnetaRxQueue),
        VMSTATE_STRUCT_ARRAY(txq, MvnetaState, MVNETA_NUM_QUEUES, 1,
                             vmstate_mvneta_txq, MvnetaTxQueue),
        VMSTATE_UINT32(rxq_enabled, MvnetaState),
        VMSTATE_UINT32(txq_enabled, MvnetaState),
        VMSTATE_UINT32(misc_cause, MvnetaState),
        VMSTATE_UINT64_ARRAY(mib, MvnetaState, MVNETA_NUM_MIB),
        VMSTATE_UINT32_ARRAY(mib_high_latch, MvnetaState, MVNETA_NUM_MIB64),
        VMSTATE_UINT32(rx_discard, MvnetaState),
        VMSTATE_UINT32(rx_overrun, MvnetaState),
        VMSTATE_END_OF_LIST()
    }
};

static Property mvneta_properties[] = {
    DEFINE_NIC_PROPERTIES(MvnetaState, conf),
    /* What the device's DMA sees; the board links it (virt: system memory). */
    DEFINE_PROP_LINK("dma-memory", MvnetaState, dma_mr,
                     TYPE_MEMORY_REGION, MemoryRegion *),
    DEFINE_PROP_UINT32("clock-frequency", MvnetaState, clock_frequency,
                       24000000),
    DEFINE_PROP_END_OF_LIST(),
};

static void mvneta_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->desc = "Marvell Armada 3700 NETA Ethernet controller";
    dc->realize = mvneta_realize;
    dc->unrealize = mvneta_unrealize;
    dc->reset = mvneta_reset;
    dc->vmsd = &vmstate_mvneta;
    /* Created with -device on machines with a platform bus (virt). */
    dc->user_creatable = true;
    set_bit(DEVICE_CATEGORY_NETWORK, dc->categories);
    device_class_set_props(dc, mvneta_properties);
}

static const TypeInfo mvneta_info = {
    .name           = TYPE_MVNETA,
    .parent         = TYPE_SYS_BUS_DEVICE,
    .instance_size  = sizeof(MvnetaState),
    .instance_init  = mvneta_init,
    .class_init     = mvneta_class_init,
};

static void mvneta_register_types(void)
{
    type_register_static(&mvneta_info);
}

type_init(mvneta_register_types)
