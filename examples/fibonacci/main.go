// The seed article's Fibonacci service: GET /fibonacci?num=N answers {"ret": Fibonacci(N)}.
// Built with -gcflags '-l' so that Fibonacci keeps its own machine code for gotrace to probe.
// The listen address comes from -addr (default :8080) so tests can pick a free port.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
)

func Fibonacci(n int) int {
	if n < 2 {
		return n
	}
	p, q, r := 0, 0, 1
	for i := 2; i <= n; i++ {
		p = q
		q = r
		r = p + q
	}
	return r
}

func main() {
	addr := flag.String("addr", ":8080", "address to listen on")
	flag.Parse()

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())

	r.GET("/fibonacci", func(c *gin.Context) {
		num := c.DefaultQuery("num", "0")
		x, err := strconv.Atoi(num)
		if err != nil || x <= 0 {
			c.JSON(http.StatusBadRequest, gin.H{"message": "The input must be an integer greater than zero"})
			return
		}

		c.JSON(http.StatusOK, gin.H{"ret": Fibonacci(x)})
	})

	srv := &http.Server{
		Addr:    *addr,
		Handler: r,
	}

	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatalf("listen: %s\n", err)
		}
	}()
	log.Printf("listening on %s", *addr)

	// Wait for an interrupt, then shut down gracefully with a 5 second timeout.
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, os.Interrupt, syscall.SIGTERM)
	<-quit
	log.Println("Shutdown Server ...")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal("Server Shutdown:", err)
	}
	log.Println("Server exiting")
}
