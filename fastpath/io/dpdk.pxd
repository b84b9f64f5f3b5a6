# The part of DPDK 22.11 (libdpdk) the dpdk port driver uses: EAL, device
# hot-plug, mbuf pools and ethdev.  Built only when pkg-config finds libdpdk.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "rte_errno.h" nogil:
    int rte_errno
    const char* rte_strerror(int errnum)

cdef extern from "rte_eal.h" nogil:
    int rte_eal_init(int argc, char** argv)

cdef extern from "rte_version.h" nogil:
    const char* rte_version()

cdef extern from "rte_dev.h" nogil:
    struct rte_device:
        pass
    int rte_dev_probe(const char* devargs)
    int rte_dev_remove(rte_device* dev)

cdef extern from "rte_mbuf.h" nogil:
    struct rte_mempool:
        pass
    struct rte_mbuf:
        uint32_t pkt_len
        uint16_t data_len
        uint16_t nb_segs
    int RTE_MBUF_DEFAULT_BUF_SIZE
    rte_mempool* rte_pktmbuf_pool_create(const char* name, unsigned n, unsigned cache_size,
                                         uint16_t priv_size, uint16_t data_room_size,
                                         int socket_id)
    void rte_mempool_free(rte_mempool* mp)
    rte_mbuf* rte_pktmbuf_alloc(rte_mempool* mp)
    void rte_pktmbuf_free(rte_mbuf* m)
    void rte_pktmbuf_free_bulk(rte_mbuf** mbufs, unsigned count)
    char* rte_pktmbuf_append(rte_mbuf* m, uint16_t len)
    uint16_t rte_pktmbuf_tailroom(const rte_mbuf* m)
    const void* rte_pktmbuf_read(const rte_mbuf* m, uint32_t off, uint32_t len, void* buf)

cdef extern from *:
    """
    #include <rte_mbuf.h>
    static inline uint8_t *fp_mbuf_data(struct rte_mbuf *m) {
        return rte_pktmbuf_mtod(m, uint8_t *);
    }
    """
    uint8_t* fp_mbuf_data(rte_mbuf* m) nogil

cdef extern from "rte_ethdev.h" nogil:
    struct rte_eth_conf:
        pass
    struct rte_eth_dev_info:
        rte_device* device
        const char* driver_name
    struct rte_eth_stats:
        uint64_t imissed
        uint64_t ierrors
        uint64_t rx_nombuf
    struct rte_ether_addr:
        uint8_t addr_bytes[6]
    int rte_eth_dev_get_port_by_name(const char* name, uint16_t* port_id)
    int rte_eth_dev_info_get(uint16_t port_id, rte_eth_dev_info* info)
    int rte_eth_dev_socket_id(uint16_t port_id)
    int rte_eth_dev_configure(uint16_t port_id, uint16_t nb_rx_q, uint16_t nb_tx_q,
                              const rte_eth_conf* conf)
    int rte_eth_dev_adjust_nb_rx_tx_desc(uint16_t port_id, uint16_t* nb_rx_desc,
                                         uint16_t* nb_tx_desc)
    int rte_eth_rx_queue_setup(uint16_t port_id, uint16_t queue, uint16_t nb_desc,
                               unsigned socket_id, const void* rx_conf, rte_mempool* mp)
    int rte_eth_tx_queue_setup(uint16_t port_id, uint16_t queue, uint16_t nb_desc,
                               unsigned socket_id, const void* tx_conf)
    int rte_eth_dev_start(uint16_t port_id)
    int rte_eth_dev_stop(uint16_t port_id)
    int rte_eth_dev_close(uint16_t port_id)
    int rte_eth_promiscuous_enable(uint16_t port_id)
    int rte_eth_stats_get(uint16_t port_id, rte_eth_stats* stats)
    int rte_eth_macaddr_get(uint16_t port_id, rte_ether_addr* mac)
    uint16_t rte_eth_rx_burst(uint16_t port_id, uint16_t queue, rte_mbuf** pkts, uint16_t n)
    uint16_t rte_eth_tx_burst(uint16_t port_id, uint16_t queue, rte_mbuf** pkts, uint16_t n)
