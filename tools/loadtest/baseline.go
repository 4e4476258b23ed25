package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/glebarez/sqlite"
	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/procurement/gateway/wire"
)

// baselineBody is the one row the baseline endpoint writes per request.
type baselineBody struct {
	ID        int64
	Body      []byte
	CreatedAt time.Time
}

// TableName: created for the run and dropped after it.
func (baselineBody) TableName() string { return "baseline_bodies" }

// baseline is the yardstick: a bare gin endpoint that does one GORM insert
// of the raw body into the same database, and answers stat 1. It is what a
// callback costs with no envelope, no validation, no dedup and no audit;
// ours / baseline says what those cost on top of the bare insert.
type baseline struct {
	db   *gorm.DB
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// startBaseline creates baseline_bodies and serves the endpoint on a free
// loopback port. The database is opened as the gateway opens it (model.Open):
// same DSN normalisation, pool size, arguments interpolated by the driver
// and no GORM statement cache on MySQL, WAL and synchronous=FULL on SQLite,
// no implicit transaction around the insert; so the two differ only in what
// the endpoint does.
func startBaseline(ctx context.Context, driver, dsn string, pool int) (*baseline, error) {
	db, err := openBare(driver, dsn, pool)
	if err != nil {
		return nil, err
	}
	if err := db.WithContext(ctx).Migrator().DropTable(&baselineBody{}); err != nil {
		closeDB(db)
		return nil, fmt.Errorf("baseline: drop old table: %w", err)
	}
	if err := db.WithContext(ctx).Migrator().CreateTable(&baselineBody{}); err != nil {
		closeDB(db)
		return nil, fmt.Errorf("baseline: create table: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/api/guarantee/:kind", func(c *gin.Context) {
		body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, 32<<20))
		if err != nil {
			c.JSON(http.StatusBadRequest, wire.Response{Stat: 0, Errcode: wire.CodeBadParam, Msg: "body"})
			return
		}
		if err := db.WithContext(c.Request.Context()).Create(&baselineBody{Body: body}).Error; err != nil {
			c.JSON(http.StatusServiceUnavailable, wire.Response{Stat: 0, Errcode: wire.CodeUnavailable, Msg: "storage"})
			return
		}
		c.JSON(http.StatusOK, wire.Response{Stat: 1, Errcode: wire.CodeOK, Msg: "成功"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeDB(db)
		return nil, fmt.Errorf("baseline: listen: %w", err)
	}
	// The gateway's server timeouts (main.go), so that only the handler differs.
	b := &baseline{db: db, ln: ln, done: make(chan error, 1), srv: &http.Server{Handler: r,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute}}
	go func() { b.done <- b.srv.Serve(ln) }()
	return b, nil
}

func (b *baseline) url() string { return "http://" + b.ln.Addr().String() }

// rows counts what the endpoint stored.
func (b *baseline) rows(ctx context.Context) (int64, error) {
	var n int64
	err := b.db.WithContext(ctx).Model(&baselineBody{}).Count(&n).Error
	return n, err
}

// stop shuts the endpoint down and drops its table.
func (b *baseline) stop(ctx context.Context) error {
	serr := b.srv.Shutdown(ctx)
	if err := <-b.done; !errors.Is(err, http.ErrServerClosed) && serr == nil {
		serr = err
	}
	derr := b.db.WithContext(ctx).Migrator().DropTable(&baselineBody{})
	closeDB(b.db)
	return errors.Join(serr, derr)
}

// openBare opens GORM on the gateway's database with the settings of
// model.Open.
func openBare(driver, dsn string, pool int) (*gorm.DB, error) {
	var dialector gorm.Dialector
	switch driver {
	case "mysql":
		cfg, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("baseline: dsn: %w", err)
		}
		cfg.ParseTime, cfg.Loc, cfg.Collation, cfg.InterpolateParams = true, time.UTC, "utf8mb4_bin", true
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["time_zone"] = "'+00:00'"
		dialector = mysql.New(mysql.Config{DSNConfig: cfg})
	case "sqlite":
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		dialector = sqlite.Open(dsn + sep + "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	default:
		return nil, fmt.Errorf("baseline: unknown driver %q", driver)
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true})
	if err != nil {
		return nil, fmt.Errorf("baseline: open %s: %w", driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	if driver == "sqlite" {
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(pool)
		sqlDB.SetMaxIdleConns(pool)
	}
	return db, nil
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
}
