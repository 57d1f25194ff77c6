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
#define MVNETA_NUM_MIB      32          /* 0x3000..0x307c */

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
    uint32_t mib_high_latch[2];
    uint32_t rx_discard;
    uint32_t rx_overrun;

    uint32_t rx_bufs[2112];     /* buffer addresses of the frame being received */
    uint8_t tx_frame[16384 + 64];
    uint8_t rx_frame[16384 + 64];
};

#endif
