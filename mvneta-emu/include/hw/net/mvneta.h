/*
 * Marvell Armada 3700 NETA (mvneta) Ethernet controller model
 *
 * Part of ppkit (github.com/ppkit/ppkit, mvneta-emu/).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_NET_MVNETA_H
#define HW_NET_MVNETA_H

#include "qom/object.h"
#include "net/net.h"
#include "hw/sysbus.h"

#define TYPE_MVNETA "mvneta"
OBJECT_DECLARE_SIMPLE_TYPE(MvnetaState, MVNETA)

#define MVNETA_NUM_QUEUES   8
#define MVNETA_MMIO_SIZE    0x4000
#define MVNETA_NUM_REGS     (MVNETA_MMIO_SIZE / 4)
#define MVNETA_NUM_MIB      32          /* 32-bit counters at 0x3000..0x307c */
#define MVNETA_NUM_MIB64    2           /* good octets received and sent */

#define MVNETA_MAX_FRAME    16384       /* longest frame moved, FCS excluded */
#define MVNETA_MH_SIZE      2           /* Marvell header in front of RX data */
#define MVNETA_FCS_SIZE     4
/* What RX writes for the longest frame: Marvell header, frame, FCS. */
#define MVNETA_RX_FRAME_SIZE (MVNETA_MH_SIZE + MVNETA_MAX_FRAME + MVNETA_FCS_SIZE)
/* RXQ_SIZE and RXQ_CONFIG count buffer size and offset in 8-byte units. */
#define MVNETA_RX_BUF_UNIT  8
/* Most buffers one frame can span: the smallest buffer holds one unit. */
#define MVNETA_RX_MAX_BUFS  DIV_ROUND_UP(MVNETA_RX_FRAME_SIZE, MVNETA_RX_BUF_UNIT)

typedef struct MvnetaRxQueue {
    uint32_t occupied;      /* descriptors holding a frame, not yet returned */
    uint32_t non_occupied;  /* descriptors with a buffer, owned by the device */
    uint32_t index;         /* next descriptor the device fills */
    bool time_fired;        /* time-coalescing period elapsed while occupied */
    QEMUTimer *coal_timer;
} MvnetaRxQueue;

typedef struct MvnetaTxQueue {
    uint32_t pending;       /* descriptors handed to the device, not yet sent */
    uint32_t sent;          /* sent descriptors the driver has not released */
    uint32_t index;         /* next descriptor the device reads */
} MvnetaTxQueue;

struct MvnetaState {
    /*< private >*/
    SysBusDevice parent_obj;
    /*< public >*/

    MemoryRegion iomem;
    qemu_irq irq;
    MemoryRegion *dma_mr;       /* "dma-memory" link: what the DMA engine sees */
    AddressSpace dma_as;
    NICState *nic;
    NICConf conf;
    uint32_t clock_frequency;   /* Hz of the core clock (RX time coalescing) */

    /* Plain storage for every register without behaviour. */
    uint32_t regs[MVNETA_NUM_REGS];

    MvnetaRxQueue rxq[MVNETA_NUM_QUEUES];
    MvnetaTxQueue txq[MVNETA_NUM_QUEUES];
    uint32_t rxq_enabled;       /* RXQ_CMD bits[7:0] */
    uint32_t txq_enabled;       /* TXQ_CMD bits[7:0] */
    uint32_t misc_cause;

    /* MIB counters, read-to-clear; the two 64-bit ones latch their high word. */
    uint64_t mib[MVNETA_NUM_MIB];
    uint32_t mib_high_latch[MVNETA_NUM_MIB64];
    uint32_t rx_discard;
    uint32_t rx_overrun;

    uint32_t rx_bufs[MVNETA_RX_MAX_BUFS]; /* buffers of the frame being received */
    uint8_t tx_frame[MVNETA_MAX_FRAME];
    uint8_t rx_frame[MVNETA_RX_FRAME_SIZE];
};

#endif
